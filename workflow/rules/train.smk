# features (frozen backbones) -> train -> evaluate, one job per run.


rule features:
    input:
        train=f"{DATA}/train.pt",
        test=f"{DATA}/test.pt",
    output:
        train="results/features/{dataset}/{backbone}-{weights}-{size}/train.pt",
        test="results/features/{dataset}/{backbone}-{weights}-{size}/test.pt",
    log:
        "logs/features/{dataset}/{backbone}-{weights}-{size}.log",
    benchmark:
        "results/benchmarks/features/{dataset}/{backbone}-{weights}-{size}.tsv"
    wildcard_constraints:
        backbone="|".join(re.escape(b) for b in BACKBONES) or "(?!)",
        weights=r"imagenet|random\d+",
        size=r"\d+",
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=features_mem_mb,
        runtime=features_runtime,
        gpu=GPU_JOBS,
    params:
        code=code_digest(SCRIPTS / "features.py"),
        model_code=model_code,
        backbone=backbone_params,
        device=DEVICE,
        precision=PRECISION,
    script:
        "../../scripts/features.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/runs/{run}/model.pt",
        history="results/runs/{run}/history.csv",
    log:
        "logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=GPU_JOBS,
    params:
        code=code_digest(SCRIPTS / "train.py"),
        model_code=model_code,
        run=run_settings,
        device=DEVICE,
        precision=PRECISION,
        # only `lr: auto` runs depend on it: a new finder suggestion must not retrain the others
        lr_suggestion=lambda wildcards: (
            config["lr_finder"]["suggestion"]
            if RUNS[wildcards.run]["lr"] == "auto"
            else None
        ),
        # outside the declared outputs, so that a killed job resumes from it
        checkpoint=lambda wildcards: f"results/checkpoints/{wildcards.run}.pt",
    script:
        "../../scripts/train.py"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics="results/runs/{run}/metrics.json",
    log:
        "logs/evaluate/{run}.log",
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=evaluate_runtime,
        gpu=GPU_JOBS,
    params:
        code=code_digest(SCRIPTS / "evaluate.py"),
        model_code=model_code,
        device=DEVICE,
        precision=PRECISION,
        evaluation=evaluation_settings,
    script:
        "../../scripts/evaluate.py"
