"""Snakemake entry point of the 'features' step: a frozen backbone's features, computed once."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.features import main

    main(
        train_path=snakemake.input.train,  # noqa: F821
        test_path=snakemake.input.test,  # noqa: F821
        out_train=snakemake.output.train,  # noqa: F821
        out_test=snakemake.output.test,  # noqa: F821
        backbone=dict(snakemake.params.backbone),  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        precision=snakemake.params.precision,  # noqa: F821
    )
