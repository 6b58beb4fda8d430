"""Snakemake entry point of the 'train' step: one run, resumed from its checkpoint if one exists."""

from cifarlab.core.logs import log_to

with log_to(snakemake.log[0]):
    from cifarlab.core import paths
    from cifarlab.training.loop import main

    inputs = snakemake.input
    # The live curves' switch is read from the config here, not given as a rule param: Snakemake's
    # params trigger reruns a job whose params change, and whether TensorBoard files are written
    # changes no result, so turning them on or off must retrain nothing.
    curves = paths.fill(paths.TENSORBOARD, **dict(snakemake.wildcards.items()))
    main(
        train_path=inputs.train,
        test_path=inputs.test,
        model_path=snakemake.output.model,
        history_path=snakemake.output.history,
        run=dict(snakemake.params.run),
        device=snakemake.params.device,
        checkpoint=snakemake.params.checkpoint,
        lr_finder=inputs.get("lr_finder"),
        lr_suggestion=snakemake.params.lr_suggestion,
        cached_train=inputs.get("cached_train"),
        cached_test=inputs.get("cached_test"),
        threads=snakemake.threads,
        precision=snakemake.params.precision,
        tensorboard=curves if snakemake.config["tensorboard"] else None,
        # what `python -m cifarlab verify` compares and retrains from: the code, the input files
        record={
            "code_digest": snakemake.params.code,
            "model_code": snakemake.params.model_code,
            "inputs": {key: str(value) for key, value in inputs.items()},
        },
    )
