"""Snakemake entry point of the 'prepare' step: decode one dataset's archive once into uint8 tensors."""

from cifarlab.core.logs import log_to
from cifarlab.data.catalog import study_datasets
from cifarlab.data.prepare import DataError, prepare

# Unusable data is said in one line naming the file and the fix (log and terminal), not a traceback.
with log_to(snakemake.log[0], expected=(DataError,)):
    inputs, output = snakemake.input, snakemake.output
    # the dataset's settings (cifarlab.data.catalog.study_datasets): name, source, md5, labels, ...
    dataset = snakemake.params.dataset
    # The source as the config names it now (messages name the user's own files); not a param:
    # the data is the archive, so the same bytes under another path rerun nothing.
    source = study_datasets(snakemake.config)[snakemake.wildcards.dataset]["source"]
    prepare(
        inputs.archive,
        output.train,
        output.test,
        output.samples,
        image_size=dataset["image_size"],
        source=source,
        workers=snakemake.threads,
        labels=dataset["labels"],
    )
