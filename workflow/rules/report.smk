# report: the comparison page a reader opens first, plus its table as Markdown and CSV.


rule report:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=list(RUNS)),
        histories=expand("results/runs/{run}/history.csv", run=list(RUNS)),
        figures=run_figures(),
        lr_finder=expand("results/lr_finder/{run}.json", run=LR_FINDER_RUNS),
        lr_finder_figures=expand(
            "results/figures/lr_finder/{run}.png", run=LR_FINDER_RUNS
        ),
        saliency=expand("results/saliency/{run}.json", run=SALIENCY_RUNS),
        saliency_figures=expand("results/figures/saliency/{run}.png", run=SALIENCY_RUNS),
        saliency_comparison="results/figures/saliency/comparison.png",
        data_record=f"resources/{DATASET}/source.json",
        data_train=f"{DATA}/train.pt",
        samples=f"results/figures/data/{DATASET}-samples.png",
    output:
        html="results/report/index.html",
        summary="results/report/summary.md",
        metrics="results/report/metrics.csv",
    log:
        "logs/report.log",
    conda:
        "../../environment.yaml"
    params:
        runs=RUNS,
        reference=config.get("report", {}).get("reference"),
        compare_to=config.get("report", {}).get("compare_to"),
    script:
        "../../scripts/report.py"
