"""Snakemake entry point of the 'train' step: one run, resumed from its checkpoint if one exists."""

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.training.loop import main

    inputs = snakemake.input
    main(
        train_path=inputs.train,
        test_path=inputs.test,
        model_path=snakemake.output.model,
        history_path=snakemake.output.history,
        run=dict(snakemake.params.run),
        device=snakemake.params.device,
        checkpoint=snakemake.params.checkpoint,
        lr_finder=inputs.get("lr_finder"),
        lr_suggestion=snakemake.params.lr_suggestion,
        cached_train=inputs.get("cached_train"),
        cached_test=inputs.get("cached_test"),
        threads=snakemake.threads,
        precision=snakemake.params.precision,
    )
