# report: the comparison page a reader opens first, plus its table as Markdown and CSV: one
# section per dataset (its runs over their seeds) and a view across datasets.

import os
from pathlib import Path

from cifarlab.core.hashing import settings_hash
from cifarlab.data.catalog import describe
from cifarlab.plots.figures import FIGURES, figure_files

REPORT = config["report"]
# Config keys that cannot change a result (the live curves' switch, read by scripts/train.py):
# left out of the config hash, so that switching them reruns nothing, not even the report.
NOT_A_RESULT = ("tensorboard",)


DATASET_NAMES = list(DATASETS)
# Snakemake's benchmark TSVs of every heavy job of the study: the page's total compute time.
BENCHMARKS = list(
    dict.fromkeys(
        [paths.fill(paths.PREPARE_BENCHMARK, dataset=d) for d in DATASETS]
        + paths.fill_each(paths.TRAIN_BENCHMARK, JOBS)
        + paths.fill_each(paths.LR_FIND_BENCHMARK, per_run(LR_FINDER_RUNS))
        + paths.fill_each(paths.SALIENCY_BENCHMARK, per_run(SALIENCY_RUNS))
        + paths.fill_each(
            paths.FEATURES_BENCHMARK,
            [features_wildcards(settings) for settings in CACHED_FEATURE_JOBS],
        )
    )
)
# The page's figures (cifarlab.plots.figures.FIGURES): each that has runs on some dataset of this
# study (a sweep figure only where the study has that sweep), and the captions the page shows.
PAGE_FIGURES = [figure for figure in FIGURES if any(FIGURE_RUNS[figure.name].values())]
REPORT_INPUTS = {
    "metrics": paths.fill_each(paths.METRICS, JOBS),
    "lr_finder": paths.fill_each(paths.LR_FINDER, per_run(LR_FINDER_RUNS)),
    "saliency": paths.fill_each(paths.SALIENCY_RESULT, per_run(SALIENCY_RUNS)),
    # one file per dataset, in DATASET_NAMES order
    "data_records": [
        paths.fill(paths.SOURCE_RECORD, dataset=d, archive=ARCHIVES[d])
        for d in DATASETS
    ],
    "data_train": [paths.fill(paths.TRAIN_DATA, dataset=d) for d in DATASETS],
    "data_test": [paths.fill(paths.TEST_DATA, dataset=d) for d in DATASETS],
    "samples": [paths.fill(paths.SAMPLES, dataset=d) for d in DATASETS],
    "benchmarks": BENCHMARKS,
    **{
        f"figure_{figure.name}": [
            path
            for d, names in FIGURE_RUNS[figure.name].items()
            if names
            for path in figure_files(figure, RUNS, names, d)
        ]
        for figure in PAGE_FIGURES
    },
    **{
        f"caption_{figure.name}": figure.caption
        for figure in PAGE_FIGURES
        if not figure.per_run
    },
    # a compared metrics.csv is an input (its change rebuilds the page); a folder is read as is
    **(
        {"compare_to": REPORT["compare_to"]}
        if REPORT["compare_to"] and Path(REPORT["compare_to"]).is_file()
        else {}
    ),
    **({"reference": REPORT["reference"]} if REPORT["reference"] else {}),
}


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=report(
            paths.REPORT_PAGE,
            category="Comparison",
            caption="../report/index.rst",
            labels={"figure": "the comparison page"},
        ),
        summary=paths.REPORT_SUMMARY,
        metrics=paths.REPORT_METRICS,
    log:
        "logs/report.log",
    conda:
        "../../environment.yaml"
    params:
        code=code_digest(SCRIPTS / "report.py"),
        # the study's datasets in order (name, labels, image_size, reference); a local source by
        # its content (the script reads its path from the config: a new path reruns nothing)
        datasets=[
            {**describe(DATASETS[d]), "source": source_url(d) or SOURCE_CONTENT[d]}
            for d in DATASET_NAMES
        ],
        # the config files that made the study, as given (summary.md's results section names them)
        configfiles=[os.path.relpath(path) for path in workflow.configfiles],
        compare_to=REPORT["compare_to"],
        # The study's identity on the page; the whole config (less NOT_A_RESULT), so any change shows.
        config_hash=settings_hash(
            {
                k: v
                for k, v in config_without_paths(config).items()
                if k not in NOT_A_RESULT
            }
        ),
        # the files no rule makes (captions, the lab's reference, a compared table), by content
        files={
            key: file_content(value)
            for key, value in REPORT_INPUTS.items()
            if key.startswith("caption_") or key in ("compare_to", "reference")
        },
    script:
        "../../scripts/report.py"
