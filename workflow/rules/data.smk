# download -> prepare: the data stage (cifarlab/data.py; sources and layouts in docs/data.md).


rule download:
    output:
        archive=f"resources/{{dataset}}/{ARCHIVE}",
        record="resources/{dataset}/source.json",
    log:
        "logs/download/{dataset}.log",
    # The code retries transient failures itself (cifarlab.data.http_get); Snakemake's retries
    # (a profile's --retries too) would multiply its attempts.
    retries: 0
    conda:
        "../../environment.yaml"
    params:
        code=code_digest(SCRIPTS / "download.py"),
        source=SOURCE,
        content=SOURCE_CONTENT,
        md5=SOURCE_MD5,
        synthetic=config["dataset"]["synthetic"] if SOURCE == "synthetic" else None,
        image_size=config["dataset"]["image_size"],
    script:
        "../../scripts/download.py"


rule prepare:
    input:
        archive=f"resources/{{dataset}}/{ARCHIVE}",
        record="resources/{dataset}/source.json",
    output:
        train="results/data/{dataset}/train.pt",
        test="results/data/{dataset}/test.pt",
        samples="results/figures/data/{dataset}-samples.png",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../environment.yaml"
    threads: 2
    resources:
        mem_mb=prepare_mem_mb,
        runtime=30,
    params:
        code=code_digest(SCRIPTS / "prepare.py"),
        image_size=config["dataset"]["image_size"],
    script:
        "../../scripts/prepare.py"
