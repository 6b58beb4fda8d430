"""Snakemake entry point of the 'download' step: fetch the data source into one verified archive."""

from cifarlab.data import download
from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    params = snakemake.params  # noqa: F821
    download(
        params.source,
        snakemake.output.archive,  # noqa: F821
        snakemake.output.record,  # noqa: F821
        md5=params.md5,
        synthetic=params.synthetic,
        image_size=params.image_size,
    )
