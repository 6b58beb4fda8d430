"""The `report` step: results/report/{index.html,summary.md,metrics.csv} of a study.

It reads only the files of docs/architecture.md (every `metrics.json`, one per dataset x run x seed;
the LR-finder and saliency JSON; each dataset's source record, `resources/<dataset>/<archive>.json`,
and prepared tensors; Snakemake's benchmark TSVs), the figures its plot rules drew and their
captions, and writes the three files.
The parts: `cifarlab.study.results` reads the step outputs, `cifarlab.report.tables` makes the
tables (one row per dataset and run over its seeds, with `cifarlab.analysis.stats`),
`cifarlab.plots.figures` lists the figures (drawn by their own rules, one module of
`cifarlab.plots` per figure),
`cifarlab.report.provenance` says how the study was made, and `cifarlab.report.page` writes the HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarlab.core.files import write_text
from cifarlab.plots.figures import caption_text
from cifarlab.report.page import build_page
from cifarlab.report.provenance import class_counts, provenance
from cifarlab.report.tables import (
    comparison_rows,
    cross_dataset_markdown,
    csv_text,
    diff_studies,
    load_reference,
    load_study,
    metrics_table,
    results_section,
    summary_document,
    summary_markdown,
    variant_sentences,
    variant_tests,
    variants_markdown,
)
from cifarlab.study.results import load_metrics, read_json

Paths = Mapping[str, str | Path]


def write_report(
    metrics_paths: Sequence[str | Path],
    outputs: Paths,
    *,
    datasets: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Paths],
    run_figures: Mapping[str, Mapping[str, Mapping[str, Any]]],
    captions: Paths,
    data: Mapping[str, Mapping[str, Any]],
    lr_finder: Mapping[str, Paths] | None = None,
    saliency: Mapping[str, Paths] | None = None,
    benchmarks: Sequence[str | Path] = (),
    reference: str | Path | None = None,
    compare_to: str | Path | None = None,
    config_hash: str = "",
    configfiles: Sequence[str] = (),
    facts: Mapping[str, Any] | None = None,
    calibration: Mapping[str, float] | None = None,
    environment: Mapping[str, Any] | None = None,
) -> list[dict]:
    """Build index.html, summary.md and metrics.csv (`outputs` keys: html, summary, metrics).

    Everything is organised per dataset (its name, as in `datasets`):
    datasets: the study's datasets in order (cifarlab.data.catalog: name, source, labels, image_size,
        reference: whether the lab's CIFAR-10 numbers apply);
    figures: dataset -> per-study figure name -> file; run_figures: dataset -> run -> per-run
        figure name -> file, or -> {seed: file} for a figure drawn per seed (names of
        cifarlab.plots.figures.FIGURES); captions: figure name -> its caption file (at least each
        per-study figure's);
    data: dataset -> {"record": <archive>.json, "splits": {"train": .pt, "test": .pt}, "samples": png};
    lr_finder, saliency: dataset -> run -> result JSON.
    configfiles: the config files the study was run with (summary.md names them); facts: more facts
    for "How it was made" (name -> value); calibration: the estimate's factors on this machine
    (cifarlab.study.estimate.remembered_factors), for the time more seeds would take; environment: the
    report's cifarlab.core.environment.environment() (its diff saved beside the page by the caller).
    Returns the table rows (one per dataset and run). Everything is read and checked before
    anything is written.
    """
    names = [d["name"] for d in datasets]
    metrics = [load_metrics(p) for p in metrics_paths]
    unknown = sorted({str(m.get("dataset")) for m in metrics} - set(names))
    if unknown:
        raise ValueError(f"metrics of the dataset(s) {unknown}, which the study does not have: {names}")
    lab = load_reference(reference)
    lab_datasets = [d["name"] for d in datasets if d.get("reference")]
    rows = comparison_rows(metrics, lab, lab_datasets)
    sections = [
        _dataset_section(
            settings, metrics, rows, lab, lab_datasets, figures=figures, run_figures=run_figures,
            data=data, lr_finder=lr_finder, saliency=saliency, compare_to=compare_to, calibration=calibration,
        )
        for settings in datasets
    ]  # fmt: skip
    shown = {n for s in sections for n in s["figures"]}
    page = build_page(
        sections,
        provenance=provenance(metrics, config_hash, benchmarks, facts, environment),
        captions={n: caption_text(captions[n]) for n in shown if n in captions},
        diff_label=str(compare_to or ""),
    )
    summary = _summary(sections, rows, names, config_hash, configfiles, compare_to)
    write_text(csv_text(metrics_table(metrics, rows, lab, lab_datasets)), outputs["metrics"])
    write_text(summary, outputs["summary"])
    write_text(page, outputs["html"])
    return rows


def _dataset_section(
    settings: Mapping[str, Any],
    metrics: list[dict],
    rows: list[dict],
    lab: Any,
    lab_datasets: list[str],
    *,
    figures: Mapping[str, Paths],
    run_figures: Mapping[str, Mapping[str, Mapping[str, Any]]],
    data: Mapping[str, Mapping[str, Any]],
    lr_finder: Mapping[str, Paths] | None,
    saliency: Mapping[str, Paths] | None,
    compare_to: str | Path | None,
    calibration: Mapping[str, float] | None,
) -> dict:
    """One dataset's section of the page and summary (write_report's arguments, for that dataset)."""
    name = settings["name"]
    ours = [m for m in metrics if m["dataset"] == name]
    dataset_rows = [r for r in rows if r["dataset"] == name]
    tests = variant_tests(ours, dict(calibration or {}))
    diff = None
    if compare_to:
        aggregates = [r for r in metrics_table(ours, dataset_rows, lab, lab_datasets) if r["seed"] == "all"]
        diff = diff_studies({r["run"]: r for r in aggregates}, load_study(compare_to, name))
    record = data[name]
    return {
        "name": name,
        "lab": name in lab_datasets,
        "rows": dataset_rows,
        "tests": tests,
        "sentences": variant_sentences(tests),
        "figures": dict(figures.get(name, {})),
        "run_figures": dict(run_figures.get(name, {})),
        "lr_finder": {run: read_json(p) for run, p in (lr_finder or {}).get(name, {}).items()},
        "saliency": {run: read_json(p) for run, p in (saliency or {}).get(name, {}).items()},
        "data": {
            "record": read_json(record["record"]),
            "counts": {split: class_counts(path) for split, path in record["splits"].items()},
            "samples": record.get("samples"),
        },
        "diff": diff,
    }


def _summary(
    sections: list[dict],
    rows: list[dict],
    names: list[str],
    config_hash: str,
    configfiles: Sequence[str],
    compare_to: str | Path | None,
) -> str:
    """summary.md: per dataset its table (and the tests between variants), then the cross-dataset
    table when there are several, the README's results section and the comparison's pointer."""
    return summary_document(
        [
            (
                f"Dataset {s['name']}" if len(sections) > 1 else "Runs",
                summary_markdown(s["rows"], lab=s["lab"])
                + (f"\n### Between variants\n\n{variants_markdown(s['tests'])}" if s["tests"] else ""),
            )
            for s in sections
        ],
        cross_dataset_markdown(rows, names) if len(sections) > 1 else "",
        results_section(names, rows, config_hash, ", ".join(configfiles)),
        [f"compared with {compare_to}: see index.html"] if compare_to else [],
    )
