# lr_find: the learning-rate range test (Smith 2015), repeated to measure its stability.
# Its params are the run's settings and the finder's own (lr_finder_params in common.smk), so a
# change to either reruns this sweep; `train` depends on its JSON only for `lr: auto` runs.


rule lr_find:
    input:
        unpack(lambda wildcards: lr_find_inputs(RUNS[wildcards.run])),
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
        model_code=model_code,
        settings=lr_finder_params,
        device=DEVICE,
        precision=PRECISION,
    script:
        "../../scripts/lr_find.py"
