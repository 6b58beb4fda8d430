"""The `report` step: results/report/{index.html,summary.md,metrics.csv} of a study.

It reads only the files of docs/architecture.md (`metrics.json`, the LR-finder and saliency JSON,
`source.json`, the prepared tensors, Snakemake's benchmark TSVs), the figures its plot rules drew
and their captions, and writes the three files. The parts: `cifarlab.results` reads the step
outputs, `cifarlab.tables` makes the tables, `cifarlab.figures` lists the figures (drawn by their
own rules, `cifarlab.comparison_figures` and the steps' modules), `cifarlab.provenance` says how
the study was made, and `cifarlab.page` writes the HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarlab.figures import caption_text
from cifarlab.files import write_text
from cifarlab.page import build_page
from cifarlab.provenance import class_counts, provenance
from cifarlab.results import load_metrics, read_json
from cifarlab.tables import (
    comparison_rows,
    csv_text,
    diff_studies,
    flat_metrics,
    load_reference,
    load_study,
    summary_markdown,
)


def write_report(
    metrics_paths: Sequence[str | Path],
    outputs: dict[str, str | Path],
    *,
    figures: dict[str, str | Path],
    run_figures: dict[str, dict[str, str | Path]],
    captions: Mapping[str, str | Path],
    lr_finder_paths: Sequence[str | Path] = (),
    saliency_paths: Sequence[str | Path] = (),
    data_record: str | Path,
    data_splits: dict[str, str | Path],
    samples: str | Path | None,
    benchmarks: Sequence[str | Path] = (),
    reference: str | Path | None = None,
    compare_to: str | Path | None = None,
    config_hash: str = "",
    facts: Mapping[str, Any] | None = None,
) -> list[dict]:
    """Build index.html, summary.md and metrics.csv (`outputs` keys: html, summary, metrics).

    figures: per-study figure name -> file; run_figures: run -> per-run figure name -> file (the
    names of cifarlab.figures.FIGURES); captions: figure name -> its caption file (at least each
    per-study figure's); facts: more facts for "How it was made" (name -> value).
    Returns the table rows. Everything is read and checked before anything is written.
    """
    metrics = [load_metrics(p) for p in metrics_paths]
    lab = load_reference(reference)
    rows = comparison_rows(metrics, lab)
    flat = [flat_metrics(m, lab) for m in metrics]
    diff = None
    if compare_to:
        diff = diff_studies({r["run"]: r for r in flat}, load_study(compare_to))
    page = build_page(
        rows,
        figures,
        run_figures,
        lr_finder={Path(p).stem: read_json(p) for p in lr_finder_paths},
        saliency={Path(p).stem: read_json(p) for p in saliency_paths},
        data={
            "record": read_json(data_record),
            "counts": {split: class_counts(path) for split, path in data_splits.items()},
            "samples": samples,
        },
        provenance=provenance(metrics, config_hash, benchmarks, facts),
        captions={name: caption_text(captions[name]) for name in figures if name in captions},
        diff=diff,
        diff_label=str(compare_to or ""),
    )
    notes = [f"compared with {compare_to}: see index.html"] if compare_to else []
    write_text(csv_text(flat), outputs["metrics"])
    write_text(summary_markdown(rows, notes), outputs["summary"])
    write_text(page, outputs["html"])
    return rows
