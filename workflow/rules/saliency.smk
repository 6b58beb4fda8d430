# saliency: maps for a fixed sample of each dataset's test images, and the randomisation sanity
# check, once per dataset and run (the model of the run's first seed).


rule saliency_sample:
    input:
        test=data_file("test"),
    output:
        sample=paths.SALIENCY_SAMPLE,
    log:
        "logs/saliency/{dataset}/sample.log",
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
        unpack(of(STUDY.saliency_inputs)),
    output:
        maps=paths.SALIENCY_MAPS,
        result=paths.SALIENCY_RESULT,
    log:
        "logs/saliency/{dataset}/{run}.log",
    benchmark:
        paths.SALIENCY_BENCHMARK
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=saliency_runtime,
        gpu=gpu_jobs,
    params:
        **study_params("saliency"),
        code=code_digest(SCRIPTS / "saliency.py"),
        model_code=model_code,
    script:
        "../../scripts/saliency.py"
