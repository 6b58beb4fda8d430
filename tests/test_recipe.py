"""airbench94 (cifarlab/models/airbench.py) and the parts of its recipe that any run can use.

The whitening conv, dirac init and frozen BatchNorm scales; alternating flip and translation;
per-group lr and weight decay, decoupled from batch size; the piecewise-linear schedule;
lookahead; test-time augmentation; and the whole recipe through training, resume, divergence,
the LR finder, evaluation and saliency.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_evaluate import run_settings, train_and_evaluate
from test_train import comparable, make_run, make_settings, same_state, stop_and_resume
from torch import nn

from cifarlab.analysis import lr_finder
from cifarlab.models import airbench, build_model
from cifarlab.training import batching, hooks, optim
from cifarlab.training.augment import alternating_flip, batches, flip_phases, translate
from cifarlab.training.lookahead import Lookahead
from cifarlab.training.loop import train_run
from cifarlab.training.optim import build_optimizer, build_scheduler
from cifarlab.training.scoring import tta_logits, tta_views
from cifarlab.training.settings import RunSettings

CPU = torch.device("cpu")
# The airbench recipe of config/config.yaml, at a batch size for 2,000 synthetic images.
RECIPE = {
    "model": "airbench", "batch_size": 64, "optimizer": "sgd", "lr": 11.5, "momentum": 0.85,
    "nesterov": True, "weight_decay": 0.0153, "decoupled": True, "param_groups": {"norm": {"lr_scale": 64.0}},
    "label_smoothing": 0.2, "schedule": "linear", "warmup_epochs": 0.5, "lr_start_factor": 0.2,
    "lr_end_factor": 0.07, "augment": "alternating_flip", "translate": 2,
    "lookahead": {"every": 5, "decay": 0.95**5, "power": 3}, "tta": "flip_translate",
}  # fmt: skip


def normalised(data: dict, n: int) -> torch.Tensor:
    return batching.to_float(data["images"][:n], data["mean"], data["std"], 32)


# --- The network ------------------------------------------------------------------------


def test_the_whitening_conv_makes_its_patches_uncorrelated_with_unit_variance(synthetic_data):
    images = normalised(synthetic_data["train"], 500)
    model = build_model(make_run(model="airbench"), 10)
    model.init_from_data(images)
    out = nn.functional.conv2d(images, model.whiten.weight)  # N x 24 x 31 x 31, no bias
    rows = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    covariance = rows.T @ rows / len(rows)
    eigenvalues = torch.linalg.eigvalsh(
        airbench.patches(images, 2).T @ airbench.patches(images, 2) / len(rows)
    )
    expected = (eigenvalues / (eigenvalues + airbench.WHITEN_EPS)).flip(0)  # largest first
    first = covariance[:12, :12]  # the 12 filters; the next 12 are their negatives
    assert torch.allclose(first, torch.diag(expected), atol=1e-3)
    assert (first.diag()[:6] > 0.95).all()  # the strong directions: unit variance
    assert torch.allclose(covariance[12:, 12:], first, atol=1e-4)
    assert torch.allclose(covariance[:12, 12:], -first, atol=1e-4)
    assert not model.whiten.weight.requires_grad


def test_convs_start_as_the_identity_and_batchnorm_trains_only_its_bias():
    model = build_model(make_run(model="airbench"), 10)
    conv = model.groups[1].conv1  # 64 -> 256
    x = torch.randn(2, 64, 8, 8)
    assert torch.equal(conv(x)[:, :64], x)  # dirac on the first 64 filters
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6
    assert all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    assert all(m.momentum == pytest.approx(0.4) and m.eps == 1e-12 for m in norms)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_the_whitening_bias_trains_for_the_first_epochs_only():
    model = build_model(make_run(model="airbench", airbench={"whiten_bias_epochs": 3}), 10)
    trains = []
    for epoch in range(5):
        hooks.start_epoch(model, epoch)
        trains.append(model.whiten.bias.requires_grad)
    assert trains == [True, True, True, False, False]


# --- Augmentation -----------------------------------------------------------------------


def test_alternating_flip_flips_each_image_in_every_other_epoch():
    images = torch.arange(8 * 3 * 4 * 5, dtype=torch.float32).view(8, 3, 4, 5)
    phases = flip_phases(8, seed=1)
    assert 0 < int(phases.sum()) < 8  # some start flipped, some not
    seen = [alternating_flip(images, phases, epoch) for epoch in range(4)]
    for i in range(8):
        flipped = [torch.equal(s[i], images[i].flip(-1)) for s in seen]
        assert flipped == [bool(phases[i]), not phases[i], bool(phases[i]), not phases[i]]
        assert all(f or torch.equal(s[i], images[i]) for f, s in zip(flipped, seen, strict=True))


def test_translate_shifts_each_image_by_at_most_its_pixels_with_reflected_edges():
    images = torch.rand(64, 3, 8, 8)
    out = translate(images, 2, torch.Generator().manual_seed(0))
    padded = nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    shifts = set()
    for i in range(64):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 10  # drawn per image, not one shift for the batch


def test_resumed_batches_draw_the_same_translations(synthetic_data):
    def run_batches(start: int) -> list[torch.Tensor]:
        return [
            x
            for x, _ in batches(
                synthetic_data["train"],
                500,
                shuffle=True,
                generator=torch.Generator().manual_seed(3),
                device=CPU,
                augment="alternating_flip",
                image_size=32,
                start=start,
                translate_pixels=2,
                flip_phase=flip_phases(2000, 0),
                epoch=1,
            )  # fmt: skip
        ]

    full, resumed = run_batches(0), run_batches(2)
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(full[2:], resumed, strict=True))


# --- Optimizer, schedule, lookahead -----------------------------------------------------


def test_param_groups_scale_the_norm_lr_and_decouple_lr_and_weight_decay_from_batch_size():
    model = build_model(make_run(model="airbench"), 10)
    for batch in (512, 1024):
        run = make_run(**{**RECIPE, "batch_size": batch})
        optimizer = build_optimizer(model, RunSettings.from_dict(run), run["lr"])
        groups = {g["name"]: g for g in optimizer.param_groups}
        # airbench94: lr / (1024 (1 + 1 / (1 - m))) per example of a summed loss = x batch for a mean loss.
        kilostep = 1024 * (1 + 1 / (1 - 0.85))
        assert groups["other"]["lr"] == pytest.approx(11.5 / kilostep * batch)
        assert groups["norm"]["lr"] == pytest.approx(64 * groups["other"]["lr"])
        for group in groups.values():  # the decay per step, lr x wd, is airbench's wd x batch / kilostep
            assert group["lr"] * group["weight_decay"] == pytest.approx(0.0153 * batch / kilostep)
        assert groups["norm"]["params"] == [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    plain = build_optimizer(model, make_settings(optimizer="sgd", weight_decay=5e-4), 0.1).param_groups
    assert all(g["lr"] == 0.1 and g["weight_decay"] == 5e-4 for g in plain)
    with pytest.raises(ValueError, match="decoupled hyperparameters are defined for sgd, not 'adam'"):
        build_optimizer(model, make_settings(optimizer="adam", decoupled=True), 1e-3)


def test_the_linear_schedule_rises_from_its_start_factor_and_falls_to_its_end_factor():
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    run = make_run(epochs=10, schedule="linear", warmup_epochs=2.3, lr_start_factor=0.2, lr_end_factor=0.07)
    scheduler = build_scheduler(optimizer, RunSettings.from_dict(run), steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.4) and max(lrs) == pytest.approx(2.0) and lrs.index(2.0) == 23
    assert lrs[-1] == pytest.approx(2.0 * (1 + (0.07 - 1) * 76 / 77))


def test_lookahead_follows_its_formula():
    model = nn.Linear(3, 2)
    settings = {"every": 2, "decay": 0.8, "power": 3}
    lookahead = Lookahead(model, settings, total_steps=6)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 7):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        lookahead.update(model, step)
        if step % 2:
            assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
            continue
        decay = 1.0 if step == 6 else 0.8 * (step / 6) ** 3
        for key in ema:
            ema[key] = ema[key] + (1 - decay) * (before[key] - ema[key])
            assert torch.allclose(model.state_dict()[key], ema[key], atol=1e-6)
    assert torch.equal(model.weight, lookahead.ema["weight"])  # the last step ends on the EMA


# --- Test-time augmentation -------------------------------------------------------------


def test_tta_is_the_weighted_mean_of_the_views_logits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(5, 3, 8, 8)
    views = tta_views(x, "flip_translate")
    assert len(views) == 6 and sum(w for w, _ in views) == pytest.approx(1.0)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :8, :8], padded[..., 2:, 2:]
    expected = 0.25 * (model(x) + model(x.flip(-1))) + 0.125 * (
        model(up_left) + model(up_left.flip(-1)) + model(down_right) + model(down_right.flip(-1))
    )
    assert torch.allclose(tta_logits(model, x, "flip_translate"), expected, atol=1e-6)
    assert torch.allclose(tta_logits(model, x, "flip"), 0.5 * (model(x) + model(x.flip(-1))), atol=1e-6)
    assert torch.equal(tta_logits(model, x, "none"), model(x))


def test_the_estimate_counts_every_tta_view():
    """cifarlab.study.estimate (no torch) keeps its own count of the views; it must match tta_views."""
    from cifarlab.study.estimate import TTA_VIEWS

    x = torch.zeros(1, 3, 8, 8)
    for tta, extra in TTA_VIEWS.items():
        assert len(tta_views(x, tta)) == (1 if tta == "none" else extra)


# --- The recipe end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_metrics(tmp_path_factory, synthetic_files) -> dict:
    run = run_settings(name="airbench", entry="airbench", sweep={}, epochs=2, **RECIPE)
    paths = train_and_evaluate(tmp_path_factory.mktemp("airbench"), synthetic_files, run)
    return json.loads(paths["metrics.json"].read_text())


def test_the_recipe_learns_and_reports_plain_and_tta_accuracy_side_by_side(recipe_metrics):
    m = recipe_metrics
    assert m["status"] == "ok" and m["model"] == "airbench" and m["tta"] == "flip_translate"
    assert m["test_accuracy"] > 40 and m["tta_test_accuracy"] > 40  # chance is 10 %
    # Two passes, not one value twice. Not the accuracies: on a small test set the flipped and
    # translated views can well get the same number of images right; the mean loss over other
    # views (a float of many logits) is never the plain pass's to the last bit.
    assert m["tta_test_loss"] != m["test_loss"]
    assert math.isfinite(m["tta_test_loss"]) and m["precision"] in ("fp32", "bf16")


def test_a_run_without_tta_has_no_tta_figures(tmp_path, synthetic_files):
    run = run_settings(epochs=1, train_subset=300, test_subset=100)
    metrics = json.loads(train_and_evaluate(tmp_path, synthetic_files, run)["metrics.json"].read_text())
    assert metrics["tta"] == "none" and metrics["tta_test_accuracy"] is None


def test_the_recipe_resumes_bit_identically_mid_epoch(synthetic_data, tmp_path, monkeypatch):
    """Lookahead's EMA, the frozen whitening bias, flips and translations survive a SIGTERM."""
    run = make_run(
        **{
            **RECIPE,
            "epochs": 2,
            "train_subset": 384,
            "test_subset": 64,
            "airbench": {"whiten_bias_epochs": 1},
        }
    )
    data = (run, synthetic_data["train"], synthetic_data["test"])
    reference = train_run(*data, device=CPU, lr=run["lr"])
    stopped = stop_and_resume(data, run["lr"], tmp_path / "ckpt.pt", monkeypatch, epoch=1, step=2)
    assert stopped["saved"]["lookahead"] is not None
    resumed = stopped["resumed"]
    assert comparable(resumed["history"]) == comparable(reference["history"])
    assert same_state(resumed["model"], reference["model"])


def test_the_recipe_at_an_absurd_lr_stops_as_diverged(synthetic_data):
    run = make_run(**{**RECIPE, "lr": 1e30, "epochs": 2, "train_subset": 256, "test_subset": 64})
    result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert result["status"] == "diverged" and result["diverged"]["epoch"] == 1


def test_the_lr_finder_sweeps_every_group_in_the_runs_lr_units(synthetic_data, monkeypatch):
    seen = []
    real = torch.optim.SGD.step

    def record(self, *args, **kwargs):
        seen.append({g["name"]: g["lr"] for g in self.param_groups})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", record)
    run = make_run(**{**RECIPE, "train_subset": 256})
    finder = {"start_lr": 1e-2, "end_lr": 100.0, "num_iter": 12, "repeats": 1, "suggestion": "valley"}
    result = lr_finder.run_lr_finder(run, synthetic_data["train"], finder, device=CPU)
    factor = optim.lr_factor(RunSettings.from_dict(run))
    for lr, groups in zip(result["repeats"][0]["lrs"], seen, strict=False):
        assert groups["other"] == pytest.approx(lr * factor) and groups["norm"] == pytest.approx(
            64 * lr * factor
        )
    assert 1e-2 <= result["lr"] <= 100.0


def test_the_lr_finder_keeps_decoupled_weight_decay_per_step_at_every_lr(synthetic_data, monkeypatch):
    """Decoupled, the decay per step (lr x torch's weight_decay) is the run's, whatever lr is swept."""
    seen = []
    real = torch.optim.SGD.step

    def record(self, *args, **kwargs):
        seen.append({g["name"]: g["lr"] * g["weight_decay"] for g in self.param_groups})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", record)
    run = make_run(**{**RECIPE, "train_subset": 256})
    assert run["decoupled"] and run["weight_decay"] > 0
    finder = {"start_lr": 1e-3, "end_lr": 10.0, "num_iter": 12, "repeats": 1, "suggestion": "valley"}
    lr_finder.run_lr_finder(run, synthetic_data["train"], finder, device=CPU)
    per_step = run["weight_decay"] * optim.lr_factor(RunSettings.from_dict(run))
    assert len(seen) > 2
    for groups in seen:
        assert groups["other"] == pytest.approx(per_step) and groups["norm"] == pytest.approx(per_step)


def test_saliency_explains_the_recipe_with_its_sanity_check(synthetic_data):
    from cifarlab.analysis import saliency

    data = synthetic_data["test"]
    model = build_model(make_run(model="airbench"), 10)
    model.init_from_data(normalised(synthetic_data["train"], 200))
    net = saliency.explainable(model, data["mean"], data["std"], 32)
    pixels = data["images"][:2].float() / 255
    maps, result = saliency.explain(
        net, pixels, data["labels"][:2], {"methods": ["vanilla", "gradcam"]}, "airbench"
    )
    assert set(result["methods"]) == {"vanilla", "gradcam"}
    assert not [m for m in result["zero_maps"] if m.startswith("vanilla")]  # (an untrained Grad-CAM may be 0)
    assert all(m.dtype == torch.float32 and m.shape[-2:] == (32, 32) for m in maps.values())
    assert result["gradcam_layer"] == "model.groups.2.conv2"
    assert len(result["sanity"]["layers"]) >= 8  # the frozen whitening conv is a layer too


def test_the_cuda_code_path_runs_the_recipe(synthetic_data, monkeypatch):
    from cifarlab.core import device as device_module

    monkeypatch.setattr(device_module, "uses_bf16", lambda device, precision: True)
    run = make_run(**{**RECIPE, "epochs": 1, "train_subset": 256, "test_subset": 64})
    result = train_run(
        run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=11.5, precision="bf16"
    )
    assert result["status"] == "ok" and result["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in result["model"].parameters())  # fp32 master weights
