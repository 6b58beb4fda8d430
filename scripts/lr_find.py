"""Snakemake entry point of the 'lr_find' step: the repeated LR range test of one run."""

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.analysis.lr_finder import main

    settings = snakemake.params.settings
    main(
        train_path=snakemake.input.train,
        result_path=snakemake.output.result,
        run=dict(settings["run"]),
        finder=dict(settings["finder"]),
        device=snakemake.params.device,
        cached_train=snakemake.input.get("cached_train"),
        threads=snakemake.threads,
        precision=snakemake.params.precision,
    )
