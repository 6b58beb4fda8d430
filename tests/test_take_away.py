"""The report says how to load a trained model in three lines (cifarlab.report.page.LOAD_MODEL_LINES),
and those lines, run in a fresh Python with torch alone, load a real model.pt2 and its classes."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import sysconfig

from conftest import lab_run

from cifarlab.core import paths
from cifarlab.report import page
from cifarlab.training import evaluate as evaluation
from cifarlab.training import loop as training

PROVENANCE = {"date": "d", "config_hash": "h", "devices": [], "compute_seconds": {}, "versions": {},
              "facts": {}, "host": "x"}  # fmt: skip


def test_the_page_shows_the_three_lines():
    assert len(page.LOAD_MODEL_LINES) == 3
    built = page.build_page([], PROVENANCE, {})
    section = built[built.index("id='take-away'") : built.index("id='provenance'")]
    for line in page.LOAD_MODEL_LINES:
        assert html.escape(line) in section
    assert "results/&lt;dataset&gt;/runs/&lt;run&gt;/seed&lt;k&gt;/model.pt2" in section


def test_the_three_lines_load_a_model_in_a_fresh_python(tmp_path, synthetic_files, synthetic_data):
    run = lab_run(name="tiny", epochs=1, batch_size=64, train_subset=200, test_subset=50)
    exported = tmp_path / paths.fill(paths.EXPORTED, dataset="<dataset>", run="<run>", seed="<k>")
    exported.parent.mkdir(parents=True)
    training.main(
        train_path=synthetic_files["train"], test_path=synthetic_files["test"],
        model_path=tmp_path / "model.pt", history_path=tmp_path / "history.csv", run=run, device="cpu",
        threads=1, precision="fp32",
    )  # fmt: skip
    evaluation.main(
        model_path=tmp_path / "model.pt", history_path=tmp_path / "history.csv",
        test_path=synthetic_files["test"], metrics_path=tmp_path / "metrics.json", dataset="synthetic",
        seed=run["seed"], device="cpu", exported_path=exported, precision="fp32",
    )  # fmt: skip
    # isolated (-I: no PYTHONPATH or current folder on the path) and without site (-S: not the
    # project's editable install); torch's site-packages added by hand
    script = "\n".join(
        [
            f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r})",
            *page.LOAD_MODEL_LINES,
            "images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)",
            "shape = list(model(images).shape)",
            "print(json.dumps({'classes': json.loads(extra['classes.json']), 'shape': shape}))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"classes": synthetic_data["train"]["classes"], "shape": [4, 10]}
