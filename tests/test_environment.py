"""The record to replay (cifarlab.core.environment): every distribution, torch's build, the CPU flags
that choose the precision, and a dirty tree's diff itself."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata

import torch

from cifarlab.core import environment
from cifarlab.report.page import _provenance_html


def test_the_record_holds_every_distribution_the_build_and_the_precision_flags():
    record = environment.environment(diffs=None)
    names = {d.metadata["Name"].lower() for d in metadata.distributions() if d.metadata["Name"]}
    assert set(record["distributions"]) == names and len(names) > 8  # more than the report's eight
    assert record["distributions"]["torch"] == metadata.version("torch")
    assert record["torch"]["cuda"] == torch.version.cuda and "gpus" in record["torch"]
    assert set(record["cpu"]["flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
    assert record["cpu"]["model"]
    html = _provenance_html(
        {"date": "d", "config_hash": "h", "devices": [], "compute_seconds": {}, "versions": {},
         "facts": {}, "host": "x", "environment": record}
    )  # fmt: skip
    assert f"{len(names)} installed distributions" in html and "avx512_bf16 " in html


def test_a_dirty_trees_diff_is_saved_by_its_hash(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "kept.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "kept.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    assert environment.uncommitted_diff(repo) == ""  # clean: no diff
    (repo / "kept.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 3\n")
    patch = environment.uncommitted_diff(repo)
    assert "-x = 1" in patch and "+x = 2" in patch and "+y = 3" in patch and "new.py" in patch
    digest = environment.save_diff(patch, tmp_path / "diffs")
    assert digest == hashlib.sha256(patch.encode()).hexdigest()
    assert (tmp_path / "diffs" / f"{digest}.diff").read_text() == patch
    # the patch applies to the commit: it is the diff itself, enough to rebuild the tree
    subprocess.run([*git, "stash", "-u", "-q"], check=True)
    (tmp_path / "p.diff").write_text(patch)
    subprocess.run([*git, "apply", str(tmp_path / "p.diff")], check=True)
    assert (repo / "kept.py").read_text() == "x = 2\n" and (repo / "new.py").read_text() == "y = 3\n"
