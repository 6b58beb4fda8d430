# report: the comparison page a reader opens first, plus its table as Markdown and CSV.

from pathlib import Path

from cifarlab.config import settings_hash

REPORT = config["report"]
# Snakemake's benchmark TSVs of every heavy job of the study: the page's total compute time.
BENCHMARKS = list(
    dict.fromkeys(
        [f"results/benchmarks/prepare/{DATASET}.tsv"]
        + expand("results/benchmarks/train/{run}.tsv", run=list(RUNS))
        + expand("results/benchmarks/lr_find/{run}.tsv", run=LR_FINDER_RUNS)
        + expand("results/benchmarks/saliency/{run}.tsv", run=SALIENCY_RUNS)
        + [
            features_dir(run).replace("results/", "results/benchmarks/", 1) + ".tsv"
            for run in RUNS.values()
            if uses_cached_features(run)
        ]
    )
)
# The page's comparison figures; a sweep figure only when the study has that sweep.
REPORT_FIGURES = (
    ["accuracy_vs_params", "accuracy_vs_time", "learning_curves"]
    + ["dropout_sweep"] * bool(DROPOUT_SWEEPS)
    + ["optimizers"] * bool(OPTIMIZER_SWEEPS)
    + ["lr_finder"] * bool(LR_FINDER_RUNS)
)
REPORT_INPUTS = {
    "metrics": expand("results/runs/{run}/metrics.json", run=list(RUNS)),
    "curves": expand("results/figures/curves/{run}.png", run=list(RUNS)),
    "confusion": expand("results/figures/confusion/{run}.png", run=list(RUNS)),
    "lr_finder": expand("results/lr_finder/{run}.json", run=LR_FINDER_RUNS),
    "lr_finder_figures": expand(
        "results/figures/lr_finder/{run}.png", run=LR_FINDER_RUNS
    ),
    "saliency": expand("results/saliency/{run}.json", run=SALIENCY_RUNS),
    "saliency_figures": expand("results/figures/saliency/{run}.png", run=SALIENCY_RUNS),
    "data_record": f"resources/{DATASET}/source.json",
    "data_train": f"{DATA}/train.pt",
    "data_test": f"{DATA}/test.pt",
    "samples": f"results/figures/data/{DATASET}-samples.png",
    "benchmarks": BENCHMARKS,
    **{f"figure_{name}": f"{COMPARISON}/{name}.png" for name in REPORT_FIGURES},
    # a compared metrics.csv is an input (its change rebuilds the page); a folder is read as is
    **(
        {"compare_to": REPORT["compare_to"]}
        if REPORT["compare_to"] and Path(REPORT["compare_to"]).is_file()
        else {}
    ),
    **({"reference": REPORT["reference"]} if REPORT["reference"] else {}),
    **(
        {"figure_saliency_comparison": "results/figures/saliency/comparison.png"}
        if SALIENCY_RUNS
        else {}
    ),
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
        compare_to=REPORT["compare_to"],
        # The study's identity on the page; the whole config, so any change shows.
        config_hash=settings_hash(config),
    script:
        "../../scripts/report.py"
