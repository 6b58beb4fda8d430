# saliency: maps for a fixed sample of test images, and the randomisation sanity check.


rule saliency_sample:
    input:
        test=f"{DATA}/test.pt",
    output:
        sample="results/saliency/sample.json",
    log:
        "logs/saliency/sample.log",
    conda:
        "../../environment.yaml"
    params:
        code=code_digest(SCRIPTS / "saliency_sample.py"),
        images_per_class=config["saliency"]["images_per_class"],
        seed=config["saliency"]["seed"],
    script:
        "../../scripts/saliency_sample.py"


rule saliency:
    input:
        unpack(lambda wildcards: model_file(RUNS[wildcards.run])),
        model="results/runs/{run}/model.pt",
        test=f"{DATA}/test.pt",
        sample="results/saliency/sample.json",
    output:
        maps="results/saliency/{run}.pt",
        result="results/saliency/{run}.json",
    log:
        "logs/saliency/{run}.log",
    benchmark:
        "results/benchmarks/saliency/{run}.tsv"
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=saliency_runtime,
        gpu=GPU_JOBS,
    params:
        code=code_digest(SCRIPTS / "saliency.py"),
        model_code=model_code,
        settings=SALIENCY_SETTINGS,
        device=DEVICE,
    script:
        "../../scripts/saliency.py"
