"""Snakemake entry point of the 'features' step: a frozen backbone's features, computed once."""

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.training.features import main

    main(
        train_path=snakemake.input.train,
        test_path=snakemake.input.test,
        out_train=snakemake.output.train,
        out_test=snakemake.output.test,
        backbone=dict(snakemake.params.backbone),
        device=snakemake.params.device,
        threads=snakemake.threads,
        precision=snakemake.params.precision,
    )
