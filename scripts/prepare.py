"""Snakemake entry point of the 'prepare' step: decode the archive once into uint8 tensors."""

import json

from cifarlab.data import DataError, prepare
from cifarlab.logs import log_to

# Unusable data is said in one line naming the file and the fix (log and terminal), not a traceback.
with log_to(snakemake.log[0], expected=(DataError,)):  # noqa: F821 (snakemake is injected by the script directive)
    inputs, output = snakemake.input, snakemake.output  # noqa: F821
    with open(inputs.record) as f:
        source = json.load(f)["source"]
    prepare(
        inputs.archive,
        output.train,
        output.test,
        output.samples,
        image_size=snakemake.params.image_size,  # noqa: F821
        source=source,
        workers=snakemake.threads,  # noqa: F821
    )
