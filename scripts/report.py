"""Snakemake entry point of the 'report' step: the comparison page, summary.md and metrics.csv."""

from cifarlab.code_version import code_version, describe
from cifarlab.figures import FIGURES
from cifarlab.logs import log_to
from cifarlab.report import write_report

with log_to(snakemake.log[0]) as log:
    inputs, params = snakemake.input, snakemake.params
    # The study's figures and their captions come as inputs `figure_<name>` (a per-run figure's:
    # one file per run) and `caption_<name>` (workflow/rules/report.smk).
    figures, run_figures, captions = {}, {}, {}
    for figure in FIGURES:
        if f"caption_{figure.name}" in inputs.keys():
            captions[figure.name] = inputs[f"caption_{figure.name}"]
        if f"figure_{figure.name}" not in inputs.keys():
            continue
        if figure.per_run:
            for path in inputs[f"figure_{figure.name}"]:
                run_figures.setdefault(figure.run_of(path), {})[figure.name] = path
        else:
            figures[figure.name] = inputs[f"figure_{figure.name}"]
    rows = write_report(
        list(inputs.metrics),
        dict(snakemake.output.items()),
        figures=figures,
        run_figures=run_figures,
        captions=captions,
        lr_finder_paths=list(inputs.lr_finder),
        saliency_paths=list(inputs.saliency),
        data_record=inputs.data_record,
        data_splits={"train": inputs.data_train, "test": inputs.data_test},
        samples=inputs.samples,
        benchmarks=list(inputs.benchmarks),
        reference=inputs.get("reference"),
        compare_to=params.compare_to,
        config_hash=params.config_hash,
        facts={"code of this report": describe(code_version())},
    )
    log.info("report of %d runs written to %s", len(rows), snakemake.output.html)
