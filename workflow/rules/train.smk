# features (frozen backbones) -> train -> evaluate, one train and evaluate job per dataset, run
# and seed (cifarlab.core.paths.RUN).


rule features:
    input:
        train=data_file("train"),
        test=data_file("test"),
    output:
        train=paths.FEATURES_TRAIN,
        test=paths.FEATURES_TEST,
    log:
        "logs/features/{dataset}/{backbone}-{weights}-{size}.log",
    benchmark:
        paths.FEATURES_BENCHMARK
    wildcard_constraints:
        backbone="|".join(re.escape(b) for b in STUDY.backbones) or "(?!)",
        weights=r"imagenet\d*|random\d+",
        size=r"\d+",
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=features_mem_mb,
        runtime=features_runtime,
        gpu=gpu_jobs,
    params:
        **study_params("features"),
        code=code_digest(SCRIPTS / "features.py"),
        model_code=model_code,
    script:
        "../../scripts/features.py"


rule train:
    input:
        unpack(of(STUDY.train_inputs)),
    output:
        model=paths.MODEL,
        history=paths.HISTORY,
    log:
        paths.TRAIN_LOG,
    benchmark:
        paths.TRAIN_BENCHMARK
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=gpu_jobs,
    params:
        # the run's settings, device, precision, the LR finder's suggestion (`lr: auto` runs
        # only) and the checkpoint: cifarlab.study.plan.Study.rule_params
        **study_params("train"),
        code=code_digest(SCRIPTS / "train.py"),
        model_code=model_code,
    script:
        "../../scripts/train.py"


rule evaluate:
    input:
        unpack(of(STUDY.evaluate_inputs)),
    output:
        metrics=paths.METRICS,
        # the model to take away (cifarlab.training.export): written here, from the whole model, so that a
        # head trained on cached features is exported with its backbone and takes images
        exported=paths.EXPORTED,
    log:
        paths.EVALUATE_LOG,
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=evaluate_runtime,
        gpu=gpu_jobs,
    params:
        **study_params("evaluate"),
        code=code_digest(SCRIPTS / "evaluate.py"),
        model_code=model_code,
    script:
        "../../scripts/evaluate.py"
