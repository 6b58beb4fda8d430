"""The report page: one self-contained HTML file (images inlined as data: URIs, no request
leaves it), readable offline and on a phone (tables scroll sideways in their own box).

Sections: with several datasets, each run's accuracy on each dataset side by side; then per
dataset: the runs table (mean ± sd, 95 % interval, n, and the lab's number in context where it
applies), the tests between the variants of each sweep, the diff against another study, the
comparison figures, the LR finder, saliency, per-run figures (a per-seed figure once per seed) and
the data; then how to load a trained model without cifarlab (model.pt2); last, how the study was
made. The figures and their captions come in the order of
`cifarlab.plots.figures.FIGURES`.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarlab.core import paths
from cifarlab.core.progress import duration
from cifarlab.plots.figures import FIGURES
from cifarlab.report.tables import (
    TEXT_KEYS,
    VARIANT_TABLE,
    cross_dataset_cell,
    cross_dataset_rows,
    fmt,
    lr_finder_summary,
    sanity_verdicts,
    table_cells,
    table_columns,
    variant_cells,
)

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; }
body { margin: 0 auto; max-width: 1100px; padding: 0 12px 40px; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
/* the run's name stays in view while a runs table scrolls sideways */
table.runs td:first-child, table.runs th:first-child { position: sticky; left: 0; background: #fff; }
table.runs th:first-child { background: #f4f4f4; z-index: 2; }
table.runs tr.bad td:first-child { background: #fde8e8; }
tr.bad td { background: #fde8e8; color: #8a0000; }
tr.weak td { color: #666; }
.pos { color: #006400; } .neg { color: #a00000; }
figure { margin: 1rem 0; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
details { margin: 0.5rem 0; } summary { cursor: pointer; font-weight: 600; }
code { font-size: 0.85em; word-break: break-all; }
pre { overflow-x: auto; background: #f6f6f6; padding: 8px; }
"""

# How to load a trained model in a Python with torch alone (cifarlab.training.export writes it);
# tests/test_take_away.py runs these three lines in a fresh Python on a real model.pt2.
EXPORTED_EXAMPLE = paths.EXPORTED.format(dataset="<dataset>", run="<run>", seed="<k>")
LOAD_MODEL_LINES = (
    "import json, torch",
    'extra = {"classes.json": ""}  # the load fills it with the class names',
    f'model = torch.export.load("{EXPORTED_EXAMPLE}", extra_files=extra).module()',
)


def data_uri(path: str | Path) -> str:
    """A PNG (or any image) as a data: URI, so that the page needs no other file."""
    path = Path(path)
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{mime.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"


def caption_html(text: str) -> str:
    """A caption (reStructuredText, as in workflow/report/*.rst) as HTML: escaped, with its
    ``code`` and **bold** rendered."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"``(.+?)``", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)


def _figure_html(path: str | Path, caption: str) -> str:
    """One image with its caption (reStructuredText inline markup allowed) and its file name."""
    plain = re.sub(r"``|\*\*", "", caption)
    alt = html.escape(plain.split(":")[0] if plain else Path(path).stem)
    return (
        f'<figure><img src="{data_uri(path)}" alt="{alt}">'
        f"<figcaption>{caption_html(caption)} <code>{html.escape(str(path))}</code></figcaption></figure>"
    )


def _section_figures(
    section: str, figures: Mapping[str, str | Path], captions: Mapping[str, str]
) -> list[str]:
    """The per-study figures of a page section that the study has, in the order of FIGURES."""
    shown = [f for f in FIGURES if not f.per_run and f.section == section and f.name in figures]
    missing = [f.name for f in shown if f.name not in captions]
    if missing:
        raise ValueError(f"no caption for the figure(s) {missing}; give each figure's caption text")
    return [_figure_html(figures[f.name], captions[f.name]) for f in shown]


def _check_figure_names(figures: Mapping[str, Any], run_figures: Mapping[str, Mapping[str, Any]]) -> None:
    """Figures the page would not show (not in FIGURES, or per run given as per study) are an error."""
    per_study = {f.name for f in FIGURES if not f.per_run}
    per_run = {f.name for f in FIGURES if f.per_run}
    unknown = sorted(set(figures) - per_study) + sorted(
        {k for kinds in run_figures.values() for k in kinds} - per_run
    )
    if unknown:
        raise ValueError(
            f"the page has no place for the figure(s) {unknown}: per-study figures are {sorted(per_study)}, "
            f"per-run ones {sorted(per_run)} (cifarlab.plots.figures.FIGURES)"
        )


def _cell_html(tag: str, text: str, is_text: bool) -> str:
    cls = ' class="text"' if is_text else ""
    return f"<{tag}{cls}>{html.escape(text)}</{tag}>"


def _table_html(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    classes: Sequence[str] = (),
    text_columns: int | Collection[int] = 1,
    table_id: str = "",
    table_class: str = "",
) -> str:
    """A table in a horizontally scrolling box (phones); the first `text_columns` (or the columns
    at these indices) align left."""
    text = set(text_columns) if isinstance(text_columns, Collection) else set(range(text_columns))
    head = "".join(_cell_html("th", h, i in text) for i, h in enumerate(headers))
    body = []
    for r, cells in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        body.append(
            f"<tr{cls}>" + "".join(_cell_html("td", c, i in text) for i, c in enumerate(cells)) + "</tr>"
        )
    ident = (f' id="{table_id}"' if table_id else "") + (f' class="{table_class}"' if table_class else "")
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def comparison_table_html(rows: Sequence[dict], lab: bool, table_id: str) -> str:
    """One dataset's runs table (class "runs"), with the lab notes below it where `lab`."""
    columns = table_columns(lab)
    headers = [h for h, _, _ in columns]
    classes = ["" if row["status"] == "ok" else "bad" for row in rows]
    text = {i for i, (_, key, _) in enumerate(columns) if key in TEXT_KEYS}
    cells = [table_cells(r, lab) for r in rows]
    table = _table_html(headers, cells, classes, text_columns=text, table_id=table_id, table_class="runs")
    notes = [
        f"<li><b>{html.escape(r['run'])}</b>: {html.escape(r['lab_note'])}</li>"
        for r in rows
        if lab and r["lab_note"]
    ]
    return table + (f"<ul>{''.join(notes)}</ul>" if notes else "")


def variants_html(tests: Sequence[dict], sentences: Sequence[str], table_id: str) -> str:
    """The tests between the variants of each sweep: a table of every pair, and the sentences."""
    headers = [h for h, _, _ in VARIANT_TABLE]
    classes = ["" if t["verdict"] == "supported" else "weak" for t in tests]
    table = _table_html(
        headers, [variant_cells(t) for t in tests], classes, text_columns=4, table_id=table_id
    )
    return "".join(f"<p>{html.escape(s)}</p>" for s in sentences) + table


def cross_dataset_html(rows: Sequence[dict], datasets: Sequence[str]) -> str:
    """Each run's accuracy on each dataset side by side (mean ± sd, n)."""
    cells = [
        [r["run"], *(cross_dataset_cell(r["datasets"][d]) for d in datasets)]
        for r in cross_dataset_rows(rows, datasets)
    ]
    return _table_html(["run", *(f"{d} test acc. %" for d in datasets)], cells, table_id="across")


def diff_table_html(diff: Sequence[dict], label: str, table_id: str) -> str:
    headers = ["run", "kind", "name", f"theirs ({label})", "ours", "change"]
    cells = []
    for d in diff:
        change = d["change"]
        change_text = change if isinstance(change, str) else fmt(change, "diff") if change is not None else ""
        cells.append([d["run"], d["kind"], d["name"], fmt(d["theirs"]), fmt(d["ours"]), change_text])
    return _table_html(headers, cells, text_columns=3, table_id=table_id)


def _definition_table(pairs: Iterable[tuple[str, Any]]) -> str:
    return _table_html(["", ""], [[k, fmt(v)] for k, v in pairs], text_columns=2)


def _slug(name: str) -> str:
    """A dataset's name as an HTML id."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def build_page(
    sections: Sequence[Mapping[str, Any]],
    provenance: dict[str, Any],
    captions: Mapping[str, str],
    diff_label: str = "",
) -> str:
    """The whole report page as one HTML string with every image inlined.

    sections: one per dataset, in study order, each with `name`, `lab` (the lab's numbers apply),
    `rows` (cifarlab.report.tables.comparison_rows of the dataset), `tests` and `sentences` (the variant
    tests), `figures` (per-study figure name -> file), `run_figures` (run -> per-run figure name
    -> file, or -> {seed: file} for a per-seed figure), `lr_finder` and `saliency` (run -> result),
    `data` (record, counts, samples) and `diff` (rows of the diff against another study, or None).
    captions: per-study figure name -> caption text. Several datasets get a cross-dataset table
    first and a heading each; one dataset's page reads as a one-dataset study.
    """
    for section in sections:
        _check_figure_names(section["figures"], section["run_figures"])
    names = [s["name"] for s in sections]
    all_rows = [r for s in sections for r in s["rows"]]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>cifarlab: comparison report</title>",
        # No network at all: images are data URIs, so nothing else may be fetched.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">",
        f"<style>{CSS}</style></head><body>",
        "<h1>cifarlab: comparison report</h1>",
        *(f"<p>{html.escape(_lead(s, len(sections) > 1))}</p>" for s in sections),
        "<p>Accuracies in %, on the test set, of each seed's chosen epoch (the best validation "
        "epoch, or the last without a validation split; never chosen on the test set): the mean "
        "± standard deviation over a run's seeds, the 95 % Student-t interval of the mean and n, "
        "the seeds it averages (one seed: no interval). A seed that diverged or failed is counted "
        "in the status, not averaged in; red rows have no accuracy at all.</p>",
    ]
    if len(sections) > 1:
        parts += [
            "<h2 id='across'>Across datasets</h2>",
            "<p>Each run's test accuracy on each dataset (mean ± sd over its seeds, n); '-': the run "
            "does not train on that dataset.</p>",
            cross_dataset_html(all_rows, names),
        ]
    for section in sections:
        parts += _dataset_html(section, captions, diff_label, several=len(sections) > 1)
    parts += [take_away_html(), "<h2 id='provenance'>How it was made</h2>", _provenance_html(provenance)]
    parts.append("</body></html>")
    return "\n".join(parts)


def take_away_html() -> str:
    """The section that says how to load a trained model (model.pt2) in three lines."""
    code = html.escape("\n".join(LOAD_MODEL_LINES))
    return (
        "<h2 id='take-away'>The models to take away</h2>"
        f"<p>Each trained model is also <code>{html.escape(EXPORTED_EXAMPLE)}</code>, a "
        "<code>torch.export</code> program. It loads in any Python with torch, without cifarlab or "
        "the model's code:</p>"
        f"<pre><code>{code}</code></pre>"
        "<p><code>model(images)</code> takes raw images, uint8 N x 3 x H x W at the data's size, "
        "and returns class scores, float32 N x classes (the normalisation is inside); "
        '<code>json.loads(extra["classes.json"])</code> are the class names. Where the '
        "<code>onnx</code> package was installed, <code>model.onnx</code> beside it is the same "
        "for ONNX runtimes.</p>"
    )


def _lead(section: Mapping[str, Any], several: bool) -> str:
    """One sentence per dataset: runs, seeds, those without an accuracy, the best mean."""
    rows = section["rows"]
    ok = [r for r in rows if r["status"] == "ok" and r["test_accuracy"] is not None]
    bad = [r for r in rows if r not in ok]
    seeds = sum(len(r["seeds"]) for r in rows)
    # a run at chance level is never ranked, so never the best
    ranked = [r for r in ok if not r["at_chance"]]
    best = max(ranked, key=lambda r: r["test_accuracy"]) if ranked else None
    lead = f"{section['name']}: " if several else f"Dataset {section['name']}: "
    lead += f"{len(rows)} runs ({seeds} trained seeds): {len(ok)} with an accuracy, {len(bad)} without"
    lead += f" ({', '.join(r['run'] + ' ' + r['status'] for r in bad)})" if bad else ""
    chance = [r["run"] for r in ok if r["at_chance"]]
    lead += f"; at chance level, not ranked: {', '.join(chance)}" if chance else ""
    if best:
        lead += (
            f". Best mean test accuracy: {best['run']}, {fmt(best['accuracy'], 'mean_sd')} % (n {best['n']})."
        )
    return lead + ("" if best else ".")


def _dataset_html(
    section: Mapping[str, Any], captions: Mapping[str, str], diff_label: str, several: bool
) -> list[str]:
    """One dataset's part of the page: its table, variant tests, diff, figures, LR finder,
    saliency, per-run figures and data. With several datasets under a heading of its own (h3)."""
    slug = _slug(section["name"])
    h = "h3" if several else "h2"
    ident = f"-{slug}" if several else ""
    figures, rows = section["figures"], section["rows"]
    parts = [f"<h2 id='dataset-{slug}'>Dataset {html.escape(section['name'])}</h2>"] if several else []
    parts.append(f"<{h} id='table{ident}'>Runs</{h}>")
    if section["lab"]:
        parts.append(
            "<p>'lab %' is the course lab's reported accuracy for the same setting; 'lab vs interval' says "
            "whether it lies inside our 95 % interval, above or below it. A run whose budget differs "
            "from the lab's (epochs, training images, image size, ImageNet weights) is 'not comparable', "
            "with the reasons below the table.</p>"
        )
    parts.append(comparison_table_html(rows, section["lab"], f"runs-{slug}"))
    if section["tests"]:
        parts += [
            f"<{h} id='variants{ident}'>Between variants</{h}>",
            "<p>Welch's t-test between the seeds of each pair of variants of a sweep (two-sided), its p "
            "raw and adjusted for the sweep's pairs (Benjamini-Hochberg); grey: the seeds do not support "
            "a difference at adjusted p &lt; 0.05, or there are too few. 'detectable' is the smallest "
            "difference (points) these seeds find with 80 % power at their observed spread; where a "
            "difference is not supported, about how many seeds per variant would resolve one of the "
            "observed size, and how long the extra seeds take by the calibrated estimate.</p>",
            variants_html(section["tests"], section["sentences"], f"variants-{slug}"),
        ]
    if section.get("diff") is not None:
        parts += [
            f"<{h} id='diff{ident}'>Compared with {html.escape(diff_label)}</{h}>",
            diff_table_html(section["diff"], "theirs", f"diff-{slug}"),
        ]
    parts.append(f"<{h} id='figures{ident}'>Comparison figures</{h}>")
    parts += _section_figures("comparison", figures, captions)
    lr_finder, saliency = section["lr_finder"], section["saliency"]
    if lr_finder:
        parts.append(f"<{h} id='lr-finder{ident}'>Learning-rate finder</{h}>")
        parts += _section_figures("lr_finder", figures, captions)
        cells = [
            [
                run,
                s["method"] + (" (chosen)" if s["chosen"] else ""),
                fmt(s["median"], "lr"),
                fmt(s["spread"], "pct"),
            ]
            for run, result in lr_finder.items()
            for s in lr_finder_summary(result)
        ]
        parts.append(
            _table_html(["run", "suggestion", "median lr", "spread (decades)"], cells, text_columns=2)
        )
    if saliency:
        parts.append(f"<{h} id='saliency{ident}'>Saliency</{h}>")
        parts += _section_figures("saliency", figures, captions)
        cells, classes = [], []
        for run, result in saliency.items():
            for v in sanity_verdicts(result):
                verdict = {True: "passes", False: "FAILS: the maps barely change with random weights"}
                cells.append(
                    [run, v["method"], fmt(v["spearman"], "lr"), verdict.get(v["passes"], v["note"])]
                )
                classes.append("bad" if v["passes"] is False else "")
        parts.append(
            "<p>Sanity check (Adebayo et al. 2018): Spearman rank correlation between the maps of the "
            "trained model and of the same model with randomised weights. A method that explains the "
            "model should change: high correlation fails the check. '-': the randomised model's map was "
            "constant (no rank order), which counts as changed.</p>"
        )
        parts.append(
            _table_html(
                ["run", "method", "Spearman (trained vs random)", "verdict"], cells, classes, text_columns=2
            )
        )
    parts.append(f"<{h} id='runs{ident}'>Per-run figures</{h}>")
    parts += _run_blocks(section["run_figures"])
    parts += [f"<{h} id='data{ident}'>Data</{h}>", _data_html(section["data"])]
    return parts


def _run_blocks(run_figures: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One folded block per run: its figures in the order of FIGURES, a per-seed one per seed."""
    per_run = [f for f in FIGURES if f.per_run]
    blocks = []
    for run, kinds in run_figures.items():
        images = []
        for figure in (f for f in per_run if f.name in kinds):
            files = kinds[figure.name]
            if isinstance(files, Mapping):
                images += [
                    _figure_html(path, f"{run}, seed {seed}: {figure.title}") for seed, path in files.items()
                ]
            else:
                images.append(_figure_html(files, f"{run}: {figure.title}"))
        summary = f"<summary>{html.escape(run)}</summary>"
        blocks.append(f"<details>{summary}<div class='grid'>{''.join(images)}</div></details>")
    return blocks


def _data_html(data: dict[str, Any]) -> str:
    record = data["record"]
    pairs = [(k, record.get(k)) for k in ("source", "archive", "bytes", "md5", "sha256", "md5_expected")]
    counts = data["counts"]
    classes = list(next(iter(counts.values())))

    def cell(split: str, cls: str) -> str:
        # a class the test split lacks has no accuracy (left out of per_class_accuracy): say so
        return (
            "0 (no test images)"
            if split == "test" and counts[split].get(cls) == 0
            else fmt(counts[split].get(cls), "int")
        )

    table = _table_html(
        ["class", *counts],
        [[c, *(cell(s, c) for s in counts)] for c in classes]
        + [["total", *(fmt(sum(counts[s].values()), "int") for s in counts)]],
    )
    sample = _figure_html(data["samples"], "Sample images per class") if data.get("samples") else ""
    return _definition_table(pairs) + "<h3>Images per class</h3>" + table + sample


def _provenance_html(provenance: dict[str, Any]) -> str:
    compute = provenance["compute_seconds"]
    pairs = [
        ("date (UTC)", provenance["date"]),
        ("config hash", provenance["config_hash"]),
        ("devices", ", ".join(provenance["devices"])),
        ("total compute (benchmarked jobs)", duration(sum(compute.values()), exact=True) if compute else "-"),
        *((f"  {rule}", duration(seconds, exact=True)) for rule, seconds in sorted(compute.items())),
        *provenance["versions"].items(),
        *provenance["facts"].items(),
        ("host", provenance["host"]),
    ]
    env = provenance.get("environment") or {}
    if not env:
        return _definition_table(pairs)
    build, cpu = env["torch"], env["cpu"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    pairs += [
        (
            "torch build",
            f"torch {build['torch']}, CUDA {build['cuda'] or '-'}, cuDNN {build['cudnn'] or '-'}",
        ),
        ("GPUs", ", ".join(build["gpus"]) or "none"),
        ("CPU", f"{cpu['model']} ({flags}; native bf16: {'yes' if cpu['native_bf16'] else 'no'})"),
        (
            "uncommitted diff",
            "uncommitted.diff (sha256 " + env["diff_sha256"] + ")" if env["diff_sha256"] else "none",
        ),
    ]
    listing = _definition_table(env["distributions"].items())
    count = len(env["distributions"])
    return (
        _definition_table(pairs)
        + f"<details><summary>{count} installed distributions</summary>{listing}</details>"
    )
