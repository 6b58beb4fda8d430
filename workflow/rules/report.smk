# report: the comparison page a reader opens first, plus its table as Markdown and CSV.

from pathlib import Path

from cifarlab.config import settings_hash

REPORT = config.get("report", {})


def benchmark_files():
    """Snakemake's benchmark TSVs of every heavy job the study runs: the page's compute time."""
    files = [f"results/benchmarks/prepare/{DATASET}.tsv"]
    files += expand("results/benchmarks/train/{run}.tsv", run=list(RUNS))
    files += expand("results/benchmarks/lr_find/{run}.tsv", run=LR_FINDER_RUNS)
    files += expand("results/benchmarks/saliency/{run}.tsv", run=SALIENCY_RUNS)
    for run in RUNS.values():
        if uses_cached_features(run):
            folder = features_dir(run).replace(
                "results/features/", "results/benchmarks/features/"
            )
            files.append(f"{folder}.tsv")
    return list(dict.fromkeys(files))


def comparison_figures():
    """The page's comparison figures; a sweep figure only when the study has that sweep."""
    names = ["accuracy_vs_params", "accuracy_vs_time", "learning_curves"]
    names += ["dropout_sweep"] if DROPOUT_SWEEPS else []
    names += ["optimizers"] if OPTIMIZER_SWEEPS else []
    names += ["lr_finder"] if LR_FINDER_RUNS else []
    return {f"figure_{name}": f"{COMPARISON}/{name}.png" for name in names}


def compare_to_input():
    """A compared study's metrics.csv is an input (its change reruns the report); a folder is read as is."""
    target = REPORT.get("compare_to")
    return {"compare_to": target} if target and Path(target).is_file() else {}


def report_inputs(wildcards):
    inputs = {
        "metrics": expand("results/runs/{run}/metrics.json", run=list(RUNS)),
        "curves": expand("results/figures/curves/{run}.png", run=list(RUNS)),
        "confusion": expand("results/figures/confusion/{run}.png", run=list(RUNS)),
        "lr_finder": expand("results/lr_finder/{run}.json", run=LR_FINDER_RUNS),
        "lr_finder_figures": expand(
            "results/figures/lr_finder/{run}.png", run=LR_FINDER_RUNS
        ),
        "saliency": expand("results/saliency/{run}.json", run=SALIENCY_RUNS),
        "saliency_figures": expand(
            "results/figures/saliency/{run}.png", run=SALIENCY_RUNS
        ),
        "data_record": f"resources/{DATASET}/source.json",
        "data_train": f"{DATA}/train.pt",
        "data_test": f"{DATA}/test.pt",
        "samples": f"results/figures/data/{DATASET}-samples.png",
        "benchmarks": benchmark_files(),
        **comparison_figures(),
        **compare_to_input(),
    }
    if REPORT.get("reference"):
        inputs["reference"] = REPORT["reference"]
    if SALIENCY_RUNS:
        inputs["figure_saliency_comparison"] = "results/figures/saliency/comparison.png"
    return inputs


rule report:
    input:
        unpack(report_inputs),
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
        compare_to=REPORT.get("compare_to"),
        # The study's identity on the page; the whole config, so any change shows.
        config_hash=settings_hash(config),
    script:
        "../../scripts/report.py"
