# Every figure is its own target, drawn from results by cheap plotting jobs, so that a change of
# plotting style reruns plotting only. Styles live in cifarlab/plotting.py.


rule plot_curves:
    input:
        history="results/runs/{run}/history.csv",
        metrics="results/runs/{run}/metrics.json",
    output:
        report(
            "results/figures/curves/{run}.png",
            category="Learning curves",
            caption="../report/curves.rst",
            labels={"run": "{run}", "figure": "learning curves"},
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
            labels={"run": "{run}", "figure": "confusion matrix"},
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
            labels={"run": "{run}", "figure": "LR range test"},
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
            labels={"run": "{run}", "figure": "saliency maps"},
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
