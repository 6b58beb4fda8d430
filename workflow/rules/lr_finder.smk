# lr_find: the learning-rate range test (Smith 2015), repeated to measure its stability, once
# per dataset and run (with the run's first seed). Its params are the run's settings and the
# finder's own (cifarlab.study.plan.Study.lr_finder_params), so a change to either reruns this sweep;
# `train` depends on its JSON only for `lr: auto` runs.


rule lr_find:
    input:
        unpack(of(STUDY.lr_find_inputs)),
    output:
        result=paths.LR_FINDER,
    log:
        paths.LR_FIND_LOG,
    benchmark:
        paths.LR_FIND_BENCHMARK
    conda:
        "../../environment.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=lr_find_runtime,
        gpu=gpu_jobs,
    params:
        **study_params("lr_find"),
        code=code_digest(SCRIPTS / "lr_find.py"),
        model_code=model_code,
    script:
        "../../scripts/lr_find.py"
