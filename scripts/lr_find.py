"""Snakemake entry point of the 'lr_find' step: the repeated LR range test of one run."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.lr_finder import main

    settings = snakemake.params.settings  # noqa: F821
    main(
        train_path=snakemake.input.train,  # noqa: F821
        result_path=snakemake.output.result,  # noqa: F821
        run=dict(settings["run"]),
        finder=dict(settings["finder"]),
        device=snakemake.params.device,  # noqa: F821
        cached_train=snakemake.input.get("cached_train"),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        precision=snakemake.params.precision,  # noqa: F821
    )
