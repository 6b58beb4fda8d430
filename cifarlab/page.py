"""The report page: one self-contained HTML file (images inlined as data: URIs, no request
leaves it), readable offline and on a phone (tables scroll sideways in their own box).

Sections: the runs table, the diff against another study, the comparison figures, the LR finder,
saliency, per-run figures, the data and how the study was made. The figures and their captions
come in the order of `cifarlab.figures.FIGURES`.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarlab.figures import FIGURES
from cifarlab.progress import duration
from cifarlab.tables import TABLE, fmt, lr_finder_summary, sanity_verdicts, table_cells

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; }
body { margin: 0 auto; max-width: 1100px; padding: 0 12px 40px; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.bad td { background: #fde8e8; color: #8a0000; }
.pos { color: #006400; } .neg { color: #a00000; }
figure { margin: 1rem 0; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
details { margin: 0.5rem 0; } summary { cursor: pointer; font-weight: 600; }
code { font-size: 0.85em; word-break: break-all; }
"""


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
            f"per-run ones {sorted(per_run)} (cifarlab.figures.FIGURES)"
        )


def _cell_html(tag: str, text: str, is_text: bool) -> str:
    cls = ' class="text"' if is_text else ""
    return f"<{tag}{cls}>{html.escape(text)}</{tag}>"


def _table_html(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    classes: Sequence[str] = (),
    text_columns: int = 1,
    table_id: str = "",
) -> str:
    """A table in a horizontally scrolling box (phones); the first `text_columns` align left."""
    head = "".join(_cell_html("th", h, i < text_columns) for i, h in enumerate(headers))
    body = []
    for r, cells in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        body.append(
            f"<tr{cls}>"
            + "".join(_cell_html("td", c, i < text_columns) for i, c in enumerate(cells))
            + "</tr>"
        )
    ident = f' id="{table_id}"' if table_id else ""
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def comparison_table_html(rows: Sequence[dict]) -> str:
    headers = [h for h, _, _ in TABLE]
    classes = ["" if row["status"] == "ok" else "bad" for row in rows]
    table = _table_html(headers, [table_cells(r) for r in rows], classes, text_columns=3, table_id="runs")
    notes = [
        f"<li><b>{html.escape(r['run'])}</b>: {html.escape(r['lab_note'])}</li>"
        for r in rows
        if r["lab_note"]
    ]
    return table + (f"<ul>{''.join(notes)}</ul>" if notes else "")


def diff_table_html(diff: Sequence[dict], label: str) -> str:
    headers = ["run", "kind", "name", f"theirs ({label})", "ours", "change"]
    cells = []
    for d in diff:
        change = d["change"]
        change_text = change if isinstance(change, str) else fmt(change, "diff") if change is not None else ""
        cells.append([d["run"], d["kind"], d["name"], fmt(d["theirs"]), fmt(d["ours"]), change_text])
    return _table_html(headers, cells, text_columns=3, table_id="diff")


def _definition_table(pairs: Iterable[tuple[str, Any]]) -> str:
    return _table_html(["", ""], [[k, fmt(v)] for k, v in pairs], text_columns=2)


def build_page(
    rows: Sequence[dict],
    figures: dict[str, str | Path],
    run_figures: dict[str, dict[str, str | Path]],
    lr_finder: dict[str, dict],
    saliency: dict[str, dict],
    data: dict[str, Any],
    provenance: dict[str, Any],
    captions: Mapping[str, str],
    diff: Sequence[dict] | None = None,
    diff_label: str = "",
) -> str:
    """The whole report page as one HTML string with every image inlined.

    figures: per-study figure name -> file; run_figures: run -> per-run figure name -> file (names
    of cifarlab.figures.FIGURES); captions: per-study figure name -> caption text.
    """
    _check_figure_names(figures, run_figures)
    ok = [r for r in rows if r["status"] == "ok" and r["test_accuracy"] is not None]
    bad = [r for r in rows if r not in ok]
    best = max(ok, key=lambda r: r["test_accuracy"]) if ok else None
    lead = f"{len(rows)} runs: {len(ok)} finished, {len(bad)} without an accuracy"
    lead += f" ({', '.join(r['run'] + ' ' + r['status'] for r in bad)})" if bad else ""
    lead += f". Best test accuracy: {best['run']}, {best['test_accuracy']:.2f} %." if best else "."
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
        f"<p>{html.escape(lead)}</p>",
        "<h2 id='table'>Runs</h2>",
        "<p>Accuracies in %, on the test set after the last epoch. Red rows have no accuracy (diverged or "
        "failed). 'lab %' is the course lab's reported accuracy for the same setting; 'not pretrained' "
        "runs are not set against the lab's ImageNet-pretrained numbers.</p>",
        comparison_table_html(rows),
    ]
    if diff is not None:
        parts += [
            f"<h2 id='diff'>Compared with {html.escape(diff_label)}</h2>",
            diff_table_html(diff, "theirs"),
        ]
    parts.append("<h2 id='figures'>Comparison figures</h2>")
    parts += _section_figures("comparison", figures, captions)
    if lr_finder:
        parts.append("<h2 id='lr-finder'>Learning-rate finder</h2>")
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
        parts.append("<h2 id='saliency'>Saliency</h2>")
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
    parts.append("<h2 id='runs'>Per-run figures</h2>")
    per_run = [f for f in FIGURES if f.per_run]
    for run, kinds in run_figures.items():
        images = "".join(_figure_html(kinds[f.name], f"{run}: {f.title}") for f in per_run if f.name in kinds)
        parts.append(
            f"<details><summary>{html.escape(run)}</summary><div class='grid'>{images}</div></details>"
        )
    parts += ["<h2 id='data'>Data</h2>", _data_html(data)]
    parts += ["<h2 id='provenance'>How it was made</h2>", _provenance_html(provenance)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _data_html(data: dict[str, Any]) -> str:
    record = data["record"]
    pairs = [(k, record.get(k)) for k in ("source", "archive", "bytes", "md5", "sha256", "md5_expected")]
    counts = data["counts"]
    classes = list(next(iter(counts.values())))
    table = _table_html(
        ["class", *counts],
        [[c, *(fmt(counts[s].get(c), "int") for s in counts)] for c in classes]
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
    return _definition_table(pairs)
