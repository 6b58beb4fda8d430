"""Snakemake entry point of the 'train' step."""

from cifarlab.logs import log_to, not_implemented

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    not_implemented("train", 3)
