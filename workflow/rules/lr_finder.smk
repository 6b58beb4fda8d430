# lr_find: the learning-rate range test (Smith 2015), repeated to measure its stability.


rule lr_find:
    input:
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
        settings=lr_finder_params,
        device=DEVICE,
    script:
        "../../scripts/lr_find.py"
