# Every figure is its own target, drawn from results by cheap plotting jobs, so that a change of
# plotting style reruns plotting only. Styles live in cifarlab/plotting.py; the options of a
# figure are the `params` of its rule, so changing one reruns that figure (and the page) only.

from cifarlab.report import run_labels, sweep_groups

# Which runs the sweep figures compare, from each run's `sweep` settings (not from names).
DROPOUT_SWEEPS = sweep_groups(RUNS, "dropout")
OPTIMIZER_SWEEPS = sweep_groups(RUNS, "optimizer")
DROPOUT_RUNS = [name for names in DROPOUT_SWEEPS.values() for name in names]
OPTIMIZER_RUNS = [name for names in OPTIMIZER_SWEEPS.values() for name in names]
COMPARISON = "results/figures/report"


rule plot_curves:
    input:
        history="results/runs/{run}/history.csv",
        metrics="results/runs/{run}/metrics.json",
    output:
        report(
            "results/figures/curves/{run}.png",
            category="Learning curves",
            caption="../report/curves.rst",
            labels=lambda w: run_labels(RUNS[w.run], "learning curves"),
        ),
    log:
        "logs/plots/curves/{run}.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"


rule plot_confusion:
    input:
        metrics="results/runs/{run}/metrics.json",
    output:
        report(
            "results/figures/confusion/{run}.png",
            category="Confusion matrices",
            caption="../report/confusion.rst",
            labels=lambda w: run_labels(RUNS[w.run], "confusion matrix"),
        ),
    log:
        "logs/plots/confusion/{run}.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"


rule plot_lr_finder:
    input:
        result="results/lr_finder/{run}.json",
    output:
        report(
            "results/figures/lr_finder/{run}.png",
            category="LR finder",
            caption="../report/lr_finder.rst",
            labels=lambda w: run_labels(RUNS[w.run], "LR range test"),
        ),
    log:
        "logs/plots/lr_finder/{run}.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"


rule plot_saliency:
    input:
        maps="results/saliency/{run}.pt",
        result="results/saliency/{run}.json",
    output:
        report(
            "results/figures/saliency/{run}.png",
            category="Saliency",
            caption="../report/saliency.rst",
            labels=lambda w: run_labels(RUNS[w.run], "saliency maps"),
        ),
    log:
        "logs/plots/saliency/{run}.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"


rule plot_saliency_comparison:
    input:
        maps=expand("results/saliency/{run}.pt", run=SALIENCY_RUNS),
        results=expand("results/saliency/{run}.json", run=SALIENCY_RUNS),
    output:
        report(
            "results/figures/saliency/comparison.png",
            category="Saliency",
            caption="../report/saliency_comparison.rst",
            labels={"run": "all", "figure": "saliency across models"},
        ),
    log:
        "logs/plots/saliency/comparison.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"


# --- Comparison figures of the report page -----------------------------------------------


rule plot_accuracy_vs_params:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=list(RUNS)),
    output:
        report(
            f"{COMPARISON}/accuracy_vs_params.png",
            category="Comparison",
            caption="../report/accuracy_vs_params.rst",
            labels={"figure": "accuracy vs parameters"},
        ),
    log:
        "logs/plots/report/accuracy_vs_params.log",
    conda:
        "../../environment.yaml"
    params:
        x="params_total",
    script:
        "../../scripts/plot.py"


rule plot_accuracy_vs_time:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=list(RUNS)),
    output:
        report(
            f"{COMPARISON}/accuracy_vs_time.png",
            category="Comparison",
            caption="../report/accuracy_vs_time.rst",
            labels={"figure": "accuracy vs training time"},
        ),
    log:
        "logs/plots/report/accuracy_vs_time.log",
    conda:
        "../../environment.yaml"
    params:
        x="train_seconds",
    script:
        "../../scripts/plot.py"


rule plot_dropout_sweep:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=DROPOUT_RUNS),
    output:
        report(
            f"{COMPARISON}/dropout_sweep.png",
            category="Comparison",
            caption="../report/dropout_sweep.rst",
            labels={"figure": "dropout sweep"},
        ),
    log:
        "logs/plots/report/dropout_sweep.log",
    conda:
        "../../environment.yaml"
    params:
        groups=DROPOUT_SWEEPS,
    script:
        "../../scripts/plot.py"


rule plot_optimizers:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=OPTIMIZER_RUNS),
        histories=expand("results/runs/{run}/history.csv", run=OPTIMIZER_RUNS),
    output:
        report(
            f"{COMPARISON}/optimizers.png",
            category="Comparison",
            caption="../report/optimizers.rst",
            labels={"figure": "optimizers"},
        ),
    log:
        "logs/plots/report/optimizers.log",
    conda:
        "../../environment.yaml"
    params:
        groups=OPTIMIZER_SWEEPS,
    script:
        "../../scripts/plot.py"


rule plot_learning_curves:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=list(RUNS)),
        histories=expand("results/runs/{run}/history.csv", run=list(RUNS)),
    output:
        report(
            f"{COMPARISON}/learning_curves.png",
            category="Comparison",
            caption="../report/learning_curves.rst",
            labels={"figure": "learning curves, all runs"},
        ),
    log:
        "logs/plots/report/learning_curves.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"


rule plot_lr_finder_comparison:
    input:
        results=expand("results/lr_finder/{run}.json", run=LR_FINDER_RUNS),
    output:
        report(
            f"{COMPARISON}/lr_finder.png",
            category="Comparison",
            caption="../report/lr_finder_comparison.rst",
            labels={"figure": "LR range tests"},
        ),
    log:
        "logs/plots/report/lr_finder.log",
    conda:
        "../../environment.yaml"
    script:
        "../../scripts/plot.py"
