"""Snakemake entry point of the 'saliency_sample' step: the fixed test images every model explains."""

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.analysis.saliency import write_sample

    write_sample(
        snakemake.input.test,
        snakemake.output.sample,
        images_per_class=snakemake.params.images_per_class,
        seed=snakemake.params.seed,
    )
