"""Snakemake entry point of the 'download' step: fetch one dataset's source into one verified archive."""

from cifarlab.core.logs import log_to
from cifarlab.data.catalog import study_datasets
from cifarlab.data.fetch import DownloadError, download
from cifarlab.data.sources import DataError

# A bad source or no network is said in one line (log and terminal), not a traceback.
with log_to(snakemake.log[0], expected=(DownloadError, DataError)):
    # the dataset's settings (cifarlab.data.catalog.study_datasets): name, source, md5, labels, ...
    dataset = snakemake.params.dataset
    # Its source from the config, not a param: a local source is known by its content (the
    # `content` param), so the same bytes under another path rerun nothing.
    source = study_datasets(snakemake.config)[snakemake.wildcards.dataset]["source"]
    download(
        source,
        snakemake.output.archive,
        snakemake.output.record,
        md5=dataset["md5"],
        synthetic=dataset["synthetic"],
        image_size=dataset["image_size"],
    )
