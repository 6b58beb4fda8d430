# report: the comparison page a reader opens first, plus its table as Markdown and CSV.

from pathlib import Path

from cifarlab.config import settings_hash
from cifarlab.figures import FIGURES, figure_files

REPORT = config["report"]
# Snakemake's benchmark TSVs of every heavy job of the study: the page's total compute time.
BENCHMARKS = list(
    dict.fromkeys(
        [f"results/benchmarks/prepare/{DATASET}.tsv"]
        + expand("results/benchmarks/train/{run}.tsv", run=list(RUNS))
        + expand("results/benchmarks/lr_find/{run}.tsv", run=LR_FINDER_RUNS)
        + expand("results/benchmarks/saliency/{run}.tsv", run=SALIENCY_RUNS)
        + [
            cached_features_dir(run).replace("results/", "results/benchmarks/", 1)
            + ".tsv"
            for run in RUNS.values()
            if uses_cached_features(run)
        ]
    )
)
# The page's figures (cifarlab.figures.FIGURES): each that has runs in this study (a sweep
# figure only when the study has that sweep), and the captions the page shows.
PAGE_FIGURES = [figure for figure in FIGURES if FIGURE_RUNS[figure.name]]
REPORT_INPUTS = {
    "metrics": expand("results/runs/{run}/metrics.json", run=list(RUNS)),
    "lr_finder": expand("results/lr_finder/{run}.json", run=LR_FINDER_RUNS),
    "saliency": expand("results/saliency/{run}.json", run=SALIENCY_RUNS),
    "data_record": f"resources/{DATASET}/source.json",
    "data_train": f"{DATA}/train.pt",
    "data_test": f"{DATA}/test.pt",
    "samples": f"results/figures/data/{DATASET}-samples.png",
    "benchmarks": BENCHMARKS,
    **{
        f"figure_{figure.name}": figure_files(figure, FIGURE_RUNS[figure.name])
        for figure in PAGE_FIGURES
    },
    **{
        f"caption_{figure.name}": figure.caption
        for figure in PAGE_FIGURES
        if not figure.per_run
    },
    # a compared metrics.csv is an input (its change rebuilds the page); a folder is read as is
    **(
        {"compare_to": REPORT["compare_to"]}
        if REPORT["compare_to"] and Path(REPORT["compare_to"]).is_file()
        else {}
    ),
    **({"reference": REPORT["reference"]} if REPORT["reference"] else {}),
}


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=report(
            "results/report/index.html",
            category="Comparison",
            caption="../report/index.rst",
            labels={"figure": "the comparison page"},
        ),
        summary="results/report/summary.md",
        metrics="results/report/metrics.csv",
    log:
        "logs/report.log",
    conda:
        "../../environment.yaml"
    params:
        code=code_digest(SCRIPTS / "report.py"),
        compare_to=REPORT["compare_to"],
        # The study's identity on the page; the whole config, so any change shows.
        config_hash=settings_hash(config),
    script:
        "../../scripts/report.py"
