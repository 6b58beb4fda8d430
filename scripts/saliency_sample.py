"""Snakemake entry point of the 'saliency_sample' step."""

from cifarlab.logs import log_to, not_implemented

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    not_implemented("saliency_sample", 5)
