"""Snakemake entry point of the 'train' step: one run, resumed from its checkpoint if one exists."""

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a machine shared with
# other jobs, spinning threads made training over ten times slower (docs/training.md, Threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cifarlab.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    from cifarlab.train import main

    inputs = snakemake.input  # noqa: F821
    main(
        train_path=inputs.train,
        test_path=inputs.test,
        model_path=snakemake.output.model,  # noqa: F821
        history_path=snakemake.output.history,  # noqa: F821
        run=dict(snakemake.params.run),  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
        checkpoint=snakemake.params.checkpoint,  # noqa: F821
        lr_finder=inputs.get("lr_finder"),
        lr_suggestion=snakemake.params.lr_suggestion,  # noqa: F821
        features_train=inputs.get("features_train"),
        features_test=inputs.get("features_test"),
        threads=snakemake.threads,  # noqa: F821
    )
