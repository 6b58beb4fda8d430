# download -> prepare: the data stage, once per dataset (cifarlab/data/fetch.py and prepare.py; sources,
# layouts and the built-in datasets in docs/data.md). A rule's `dataset` param is its {dataset}'s settings.


rule download:
    output:
        archive=paths.ARCHIVE,
        record=paths.SOURCE_RECORD,
    log:
        "logs/download/{dataset}/{archive}.log",
    wildcard_constraints:
        archive="|".join(re.escape(a) for a in sorted(set(STUDY.archives.values()))),
    # The code retries transient failures itself (cifarlab.data.fetch.http_get); Snakemake's retries
    # (a profile's --retries too) would multiply its attempts.
    retries: 0
    conda:
        "../../environment.yaml"
    params:
        code=code_digest(SCRIPTS / "download.py"),
        # What fetching reads of the dataset's settings. Data is known by its content: a local
        # source's path is no param (the same bytes elsewhere rerun nothing; the script reads
        # it from the config), its `content` is; a URL (content unknown before fetching) is.
        dataset=lambda wildcards: {
            k: DATASETS[wildcards.dataset][k]
            for k in ("md5", "synthetic", "image_size")
        },
        url=lambda wildcards: STUDY.source_url(wildcards.dataset),
        content=lambda wildcards: SOURCE_CONTENT[wildcards.dataset],
    script:
        "../../scripts/download.py"


rule prepare:
    input:
        archive=lambda wildcards: STUDY.archive_file(wildcards.dataset),
        record=lambda wildcards: STUDY.source_record(wildcards.dataset),
    output:
        train=paths.TRAIN_DATA,
        test=paths.TEST_DATA,
        samples=paths.SAMPLES,
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        paths.PREPARE_BENCHMARK
    conda:
        "../../environment.yaml"
    threads: 2
    resources:
        mem_mb=prepare_mem_mb,
        runtime=30,
    params:
        code=code_digest(SCRIPTS / "prepare.py"),
        # what preparing reads of the dataset's settings (the data is its input archive)
        dataset=lambda wildcards: {
            k: DATASETS[wildcards.dataset][k] for k in ("labels", "image_size")
        },
    script:
        "../../scripts/prepare.py"
