"""Snakemake entry point of the 'evaluate' step: metrics.json of one trained run."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.evaluate import main

    inputs = snakemake.input  # noqa: F821
    main(
        model_path=inputs.model,
        history_path=inputs.history,
        test_path=inputs.test,
        metrics_path=snakemake.output.metrics,  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
        cached_test=inputs.get("cached_test"),
        threads=snakemake.threads,  # noqa: F821
        precision=snakemake.params.precision,  # noqa: F821
        tta=snakemake.params.evaluation["tta"],  # noqa: F821
    )
