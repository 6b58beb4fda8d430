"""Snakemake entry point of the 'report' step: the comparison page, summary.md and metrics.csv."""

from pathlib import Path

from cifarlab.logs import log_to
from cifarlab.report import write_report

with log_to(snakemake.log[0]) as log:
    inputs, params = snakemake.input, snakemake.params
    figures = {key[len("figure_") :]: path for key, path in inputs.items() if key.startswith("figure_")}
    run_figures: dict[str, dict[str, str]] = {}
    for kind in ("curves", "confusion", "lr_finder_figures", "saliency_figures"):
        for path in inputs.get(kind, []):
            run_figures.setdefault(Path(path).stem, {})[kind.removesuffix("_figures")] = path
    rows = write_report(
        list(inputs.metrics),
        dict(snakemake.output.items()),
        figures=figures,
        run_figures=run_figures,
        lr_finder_paths=list(inputs.lr_finder),
        saliency_paths=list(inputs.saliency),
        data_record=inputs.data_record,
        data_splits={"train": inputs.data_train, "test": inputs.data_test},
        samples=inputs.samples,
        benchmarks=list(inputs.benchmarks),
        reference=inputs.get("reference"),
        compare_to=params.compare_to,
        config_hash=params.config_hash,
    )
    log.info("report of %d runs written to %s", len(rows), snakemake.output.html)
