"""Snakemake entry point of the 'saliency' step: one run's maps and their sanity check."""

import torch

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.saliency import run_saliency

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    run_saliency(
        snakemake.input.model,  # noqa: F821
        snakemake.input.test,  # noqa: F821
        snakemake.input.sample,  # noqa: F821
        snakemake.output.maps,  # noqa: F821
        snakemake.output.result,  # noqa: F821
        settings=snakemake.params.settings,  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
    )
