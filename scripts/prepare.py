"""Snakemake entry point of the 'prepare' step: decode one dataset's archive once into uint8 tensors."""

import json

from cifarlab.core.logs import log_to
from cifarlab.data.prepare import DataError, prepare

# Unusable data is said in one line naming the file and the fix (log and terminal), not a traceback.
with log_to(snakemake.log[0], expected=(DataError,)):
    inputs, output = snakemake.input, snakemake.output
    # the dataset's settings (cifarlab.data.catalog.study_datasets): name, source, md5, labels, ...
    dataset = snakemake.params.dataset
    with open(inputs.record) as f:
        source = json.load(f)["source"]
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
