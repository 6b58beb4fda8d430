"""cifarlab.core.files: the one way every step writes its outputs."""

import json
import os
import stat

import pytest
import torch

from cifarlab.core.files import DamagedFileError, atomic_path, load_torch, save_torch, write_json, write_text


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


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("results/data/cifar10/train.pt", "prepared data"),
        ("results/features/cifar10/resnet18-imagenet-32/train.pt", "cached features"),
        ("results/checkpoints/cifar10/vit/seed0.pt", "a training checkpoint"),
        ("results/cifar10/runs/vit/seed0/model.pt", "a trained model"),
    ],
)
def test_a_damaged_torch_file_is_named_with_what_it_is_and_the_fix(tmp_path, path, kind, caplog):
    damaged = tmp_path / path
    save_torch({"x": torch.arange(1000)}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:300])  # a copy cut short
    with caplog.at_level("INFO", logger="cifarlab.core.files"), pytest.raises(DamagedFileError) as error:
        load_torch(damaged)
    message = str(error.value)
    assert message.startswith(f"{damaged} ({kind}) is incomplete or damaged")
    assert "delete it and rerun" in message
    # torch's own text (about "your checkpoint file", whatever the file is) stays out of it
    assert "checkpoint file" not in message and "Pytorch" not in message and "Errno" not in message
    assert str(damaged) in caplog.text  # the log keeps torch's detail
