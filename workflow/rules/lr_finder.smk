# lr_find: the learning-rate range test (Smith 2015), repeated to measure its stability.
# Its params are the run's settings and the finder's own (lr_finder_params in common.smk), so a
# change to either reruns this sweep; `train` depends on its JSON only for `lr: auto` runs.


rule lr_find:
    input:
        # A frozen head sweeps on the cached backbone features, as it trains (a backbone pass
        # per step would cost hours on a CPU).
        unpack(
            lambda wildcards: (
                {"features_train": f"{features_dir(RUNS[wildcards.run])}/train.pt"}
                if uses_cached_features(RUNS[wildcards.run])
                else {}
            )
        ),
        train=f"{DATA}/train.pt",
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
        runtime=lr_find_runtime,
        gpu=GPU_JOBS,
    params:
        code=code_digest(SCRIPTS / "lr_find.py"),
        settings=lr_finder_params,
        device=DEVICE,
        precision=PRECISION,
    script:
        "../../scripts/lr_find.py"
