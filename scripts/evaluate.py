"""Snakemake entry point of the 'evaluate' step: metrics.json of one trained run."""

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a machine shared with
# other jobs, spinning threads made training over ten times slower (docs/training.md, Threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cifarlab.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.evaluate import main

    inputs = snakemake.input  # noqa: F821
    main(
        model_path=inputs.model,
        history_path=inputs.history,
        test_path=inputs.test,
        metrics_path=snakemake.output.metrics,  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
        features_test=inputs.get("features_test"),
        threads=snakemake.threads,  # noqa: F821
    )
