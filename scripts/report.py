"""Snakemake entry point of the 'report' step: the comparison page, summary.md and metrics.csv."""

import platform
from pathlib import Path

from cifarlab.core import paths
from cifarlab.core.code_version import code_version, describe
from cifarlab.core.environment import environment as environment_record
from cifarlab.core.environment import uncommitted_diff
from cifarlab.core.files import write_text
from cifarlab.core.logs import log_to
from cifarlab.plots.figures import FIGURES
from cifarlab.report.write import write_report
from cifarlab.study.estimate import CALIBRATION_FILE, read_calibration, remembered_factors
from cifarlab.study.plan import Study


def listed(files) -> list[str]:
    """A named input as a list (Snakemake gives a lone file as a string)."""
    return [files] if isinstance(files, str) else list(files)


def per_dataset_run(pattern: str, files) -> dict[str, dict[str, str]]:
    """dataset -> run -> file, for files of a per (dataset, run) pattern."""
    organised: dict[str, dict[str, str]] = {}
    for path in listed(files):
        found = paths.wildcards_of(pattern, path)
        organised.setdefault(found["dataset"], {})[found["run"]] = path
    return organised


with log_to(snakemake.log[0]) as log:
    # the report's environment; a dirty tree's diff beside the page (not an output: absent when clean)
    report_folder = str(Path(snakemake.output.html).parent)
    environment = environment_record(diffs=None)
    if environment["diff_sha256"]:
        write_text(uncommitted_diff(), Path(report_folder) / "uncommitted.diff")
    inputs, params = snakemake.input, snakemake.params
    names = [d["name"] for d in params.datasets]
    # the workflow's plan of this config: the page names a local source by its path
    sources = Study.from_config(snakemake.config).datasets
    # The study's figures and their captions come as inputs `figure_<name>` (lists: a per-study
    # figure's one file per dataset, a per-run one's per dataset x run, or x seed) and
    # `caption_<name>` (workflow/rules/report.smk); Figure.fields_of says whose file each is.
    figures, run_figures, captions = {}, {}, {}
    for figure in FIGURES:
        if f"caption_{figure.name}" in inputs.keys():
            captions[figure.name] = inputs[f"caption_{figure.name}"]
        if f"figure_{figure.name}" not in inputs.keys():
            continue
        for path in listed(inputs[f"figure_{figure.name}"]):
            found = figure.fields_of(path)
            if "run" not in found:
                figures.setdefault(found["dataset"], {})[figure.name] = path
                continue
            kinds = run_figures.setdefault(found["dataset"], {}).setdefault(found["run"], {})
            if "seed" in found:
                kinds.setdefault(figure.name, {})[found["seed"]] = path
            else:
                kinds[figure.name] = path
    data = {
        name: {"record": record, "splits": {"train": train, "test": test}, "samples": samples}
        for name, record, train, test, samples in zip(
            names,
            *(listed(inputs[key]) for key in ("data_records", "data_train", "data_test", "samples")),
            strict=True,
        )
    }
    known = read_calibration(CALIBRATION_FILE)
    rows = write_report(
        listed(inputs.metrics),
        dict(snakemake.output.items()),
        # a local source is a param by its content; the page names its path (the config's)
        datasets=[{**d, "source": sources[d["name"]]["source"]} for d in params.datasets],
        figures=figures,
        run_figures=run_figures,
        captions=captions,
        data=data,
        lr_finder=per_dataset_run(paths.LR_FINDER, inputs.lr_finder),
        saliency=per_dataset_run(paths.SALIENCY_RESULT, inputs.saliency),
        benchmarks=listed(inputs.benchmarks),
        reference=inputs.get("reference"),
        compare_to=params.compare_to,
        config_hash=params.config_hash,
        configfiles=list(params.configfiles),
        facts={"code of this report": describe(code_version())},
        # the time more seeds would take: this machine's calibration (a local run's, else a cluster's)
        calibration=remembered_factors(known, platform.node()) or remembered_factors(known, "cluster"),
        environment=environment,
    )
    log.info("report of %d rows (dataset x run) written to %s", len(rows), snakemake.output.html)
