"""Snakemake entry point of the 'saliency_sample' step: the fixed test images every model explains."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.saliency import write_sample

    write_sample(
        snakemake.input.test,  # noqa: F821
        snakemake.output.sample,  # noqa: F821
        images_per_class=snakemake.params.images_per_class,  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
    )
