"""Snakemake entry point of the 'train' step: one run, resumed from its checkpoint if one exists."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.train import main

    inputs = snakemake.input  # noqa: F821
    main(
        train_path=inputs.train,
        test_path=inputs.test,
        model_path=snakemake.output.model,  # noqa: F821
        history_path=snakemake.output.history,  # noqa: F821
        run=dict(snakemake.params.run),  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
        checkpoint=snakemake.params.checkpoint,  # noqa: F821
        lr_finder=inputs.get("lr_finder"),
        lr_suggestion=snakemake.params.lr_suggestion,  # noqa: F821
        cached_train=inputs.get("cached_train"),
        cached_test=inputs.get("cached_test"),
        threads=snakemake.threads,  # noqa: F821
        precision=snakemake.params.precision,  # noqa: F821
    )
