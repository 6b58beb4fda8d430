"""Snakemake entry point of the 'saliency' step: one run's maps and their sanity check."""

import torch

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.analysis.saliency import run_saliency

    torch.set_num_threads(snakemake.threads)
    run_saliency(
        snakemake.input.model,
        snakemake.input.test,
        snakemake.input.sample,
        snakemake.output.maps,
        snakemake.output.result,
        settings=snakemake.params.settings,
        device=snakemake.params.device,
    )
