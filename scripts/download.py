"""Snakemake entry point of the 'download' step: fetch the data source into one verified archive."""

from cifarlab.data import DataError, DownloadError, download
from cifarlab.logs import log_to

# A bad source or no network is said in one line (log and terminal), not a traceback.
with log_to(snakemake.log[0], expected=(DownloadError, DataError)):
    params = snakemake.params
    download(
        params.source,
        snakemake.output.archive,
        snakemake.output.record,
        md5=params.md5,
        synthetic=params.synthetic,
        image_size=params.image_size,
    )
