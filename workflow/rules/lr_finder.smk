# lr_find: the learning-rate range test (Smith 2015), repeated to measure its stability.
# Its params are the run's settings and the finder's own (lr_finder_params in common.smk), so a
# change to either reruns this sweep; `train` depends on its JSON only for `lr: auto` runs.


def lr_finder_inputs(wildcards):
    """The prepared training set; for a frozen backbone on cached features, those features too
    (the head then sweeps on them, as it trains: a backbone pass per step would cost hours).
    """
    run = RUNS[wildcards.run]
    inputs = {"train": f"{DATA}/train.pt"}
    if uses_cached_features(run):
        inputs["features_train"] = f"{features_dir(run)}/train.pt"
    return inputs


rule lr_find:
    input:
        unpack(lr_finder_inputs),
    output:
        result="results/lr_finder/{run}.json",
    log:
        "logs/lr_find/{run}.log",
    benchmark:
        "results/benchmarks/lr_find/{run}.tsv"
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=60,
        gpu=GPU_JOBS,
    params:
        settings=lr_finder_params,
        device=DEVICE,
    script:
        "../../scripts/lr_find.py"
