"""cifarlab.core.files: the one way every step writes its outputs."""

import json
import os
import stat

import pytest

from cifarlab.core.files import atomic_path, write_json, write_text


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_json({"accuracy": 1.0}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"accuracy": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_strict_json_refuses_nan_and_writes_nothing(tmp_path):
    target = tmp_path / "m.json"
    with pytest.raises(ValueError):
        write_json({"loss": float("nan")}, target, strict=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path, umask, mode):
    # mkstemp makes 0600 files; results/ shared by a group on a cluster must stay readable.
    old = os.umask(umask)
    try:
        write_text("x", tmp_path / "a.txt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
