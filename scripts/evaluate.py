"""Snakemake entry point of the 'evaluate' step: metrics.json of one trained run."""

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.core import paths
    from cifarlab.core.environment import DIFFS
    from cifarlab.training.evaluate import main

    inputs = snakemake.input
    main(
        model_path=inputs.model,
        history_path=inputs.history,
        test_path=inputs.test,
        metrics_path=snakemake.output.metrics,
        dataset=snakemake.wildcards.dataset,
        seed=int(snakemake.wildcards.seed),
        device=snakemake.params.device,
        cached_test=inputs.get("cached_test"),
        threads=snakemake.threads,
        precision=snakemake.params.precision,
        tta=snakemake.params.evaluation["tta"],
        time_budget=snakemake.params.evaluation.get("time_budget"),
        exported_path=snakemake.output.exported,
        diffs_folder=DIFFS,
        # beside model.pt2 where onnx is installed; not a declared output, as it may be missing
        onnx_path=paths.fill(paths.EXPORTED_ONNX, **dict(snakemake.wildcards.items())),
    )
