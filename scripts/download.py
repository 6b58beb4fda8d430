"""Snakemake entry point of the 'download' step: fetch one dataset's source into one verified archive."""

from cifarlab.core.logs import log_to
from cifarlab.data.prepare import DataError, DownloadError, download

# A bad source or no network is said in one line (log and terminal), not a traceback.
with log_to(snakemake.log[0], expected=(DownloadError, DataError)):
    # the dataset's settings (cifarlab.data.catalog.study_datasets): name, source, md5, labels, ...
    dataset = snakemake.params.dataset
    download(
        dataset["source"],
        snakemake.output.archive,
        snakemake.output.record,
        md5=dataset["md5"],
        synthetic=dataset["synthetic"],
        image_size=dataset["image_size"],
    )
