"""The training step's hot path (issue 23) computes what the per-step code it replaced did.

Per-epoch draws against per-batch draws, multi-tensor optimizers against the per-parameter loop,
our Yogi against torch-optimizer's, the tensor-list lookahead against the state-dict loop, and
the timing that model.pt records.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import lab_run
from torch import nn

from cifarlab.training.augment import alternating_flip, batches, crop_flip, flip_phases, translate
from cifarlab.training.batching import to_float
from cifarlab.training.lookahead import Lookahead
from cifarlab.training.loop import train_run
from cifarlab.training.optim import Yogi, build_optimizer
from cifarlab.training.settings import RunSettings
from cifarlab.training.timing import WARMUP_STEPS, StepClock

CPU = torch.device("cpu")


def per_batch(data, batch_size, generator, augment, pixels, phases, epoch, start):
    """The batches as the code before issue 23 made them: each batch's draws made as it came."""
    n = len(data["labels"])
    order = torch.randperm(n, generator=generator)
    for i, first in enumerate(range(0, n, batch_size)):
        index = order[first : first + batch_size]
        x = data["images"][index]
        if augment == "crop_flip":
            x = crop_flip(x, generator)
        elif augment == "alternating_flip":
            x = alternating_flip(x, phases[index], epoch)
        if pixels:
            x = translate(x, pixels, generator)
        if i >= start:
            yield to_float(x, data["mean"], data["std"], 32), data["labels"][index]


@pytest.mark.parametrize("augment", ["none", "crop_flip", "alternating_flip"])
@pytest.mark.parametrize("pixels", [0, 2])
@pytest.mark.parametrize("start", [0, 3])
def test_per_epoch_draws_give_the_per_batch_draws_batches(synthetic_data, augment, pixels, start):
    data = synthetic_data["train"]
    n, batch_size, epoch = len(data["labels"]), 37, 1  # a short last batch
    phases = flip_phases(n, seed=4)
    expected = list(
        per_batch(data, batch_size, torch.Generator().manual_seed(9), augment, pixels, phases, epoch, start)
    )
    got = list(
        batches(
            data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(9), device=CPU,
            augment=augment, image_size=32, start=start, translate_pixels=pixels,
            flip_phase=phases if augment == "alternating_flip" else None, epoch=epoch,
        )
    )  # fmt: skip
    assert len(got) == len(expected) == -(-n // batch_size) - start
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    if augment != "none" or pixels:  # the draws did something
        assert not torch.equal(got[0][0], next(per_batch(data, batch_size, torch.Generator().manual_seed(9),
                                                           "none", 0, phases, epoch, start))[0])  # fmt: skip


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)
    )  # fmt: skip


def train_steps(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 12, freeze_after: int = 5):
    """`steps` steps on fixed random data; the first parameter gets no gradient after `freeze_after`
    (as airbench's whitening bias), so per-parameter step counts differ."""
    x, y = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    first = next(net.parameters())
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        if step >= freeze_after:
            first.grad = None
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_multi_tensor_optimizers_match_the_per_parameter_loop_bit_for_bit(name):
    settings = RunSettings.from_dict(
        lab_run(optimizer=name, lr=0.05, momentum=0.85, nesterov=True, weight_decay=5e-3,
                param_groups={"norm": {"lr_scale": 4.0}})
    )  # fmt: skip
    net = small_net()
    ours = build_optimizer(net, settings, 0.05)
    assert all(group["foreach"] for group in ours.param_groups)  # on the CPU: foreach, not fused
    after = train_steps(net, ours)
    reference_net = small_net()
    reference = build_optimizer(reference_net, settings, 0.05)
    for group in reference.param_groups:
        group["foreach"] = False
    expected = train_steps(reference_net, reference)
    assert all(torch.equal(a, b) for a, b in zip(after, expected, strict=True))
    assert not torch.equal(after[-1], small_net()[-1].weight)  # it trained


def test_our_yogi_matches_torch_optimizer_step_for_step():
    torch_optimizer = pytest.importorskip("torch_optimizer")

    def groups(net):
        params = list(net.parameters())
        return [{"params": params[:3], "weight_decay": 0.01, "lr": 0.05}, {"params": params[3:]}]

    ours_net, reference_net = small_net(), small_net()
    ours = train_steps(ours_net, Yogi(groups(ours_net), lr=1e-2))
    expected = train_steps(reference_net, torch_optimizer.Yogi(groups(reference_net), lr=1e-2))
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)  # measured: bit-identical on x86
    first = next(ours_net.parameters())
    optimizer = Yogi(groups(small_net()))
    with pytest.raises(ValueError, match="lr -1 must be positive"):
        Yogi([first], lr=-1)
    assert optimizer.defaults["eps"] == 1e-3  # torch-optimizer's default, not Adam's


def test_lookahead_on_tensor_lists_matches_the_state_dict_loop():
    settings, total = {"every": 2, "decay": 0.9, "power": 3}, 7
    net, reference_net = small_net(), small_net()
    lookahead = Lookahead(net, settings, total)
    ema = {k: v.detach().clone() for k, v in reference_net.state_dict().items() if v.is_floating_point()}
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for step in range(1, total + 1):
        for module in (net, reference_net):
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(torch.full_like(p, 0.01 * step))
            module.train()(x)  # moves the batch-norm statistics
        lookahead.update(net, step)
        if step % settings["every"] == 0 or step >= total:  # the code before issue 23
            decay, state = lookahead.decay_at(step), reference_net.state_dict()
            for key, slow in ema.items():
                slow.lerp_(state[key], 1 - decay)
                state[key].copy_(slow)
    for (key, a), b in zip(net.state_dict().items(), reference_net.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    saved = lookahead.state_dict()
    assert set(saved) == set(ema) and all(torch.equal(saved[k], ema[k]) for k in ema)


def test_the_step_clock_leaves_out_the_warm_up_and_each_new_batch_size():
    clock = StepClock(CPU)
    for size in [64] * 5 + [10]:  # the epoch's short last batch is a new shape
        clock.before_step(size)
    clock.end_epoch()
    first = clock.take()
    assert first["warmup_excluded_steps"] == WARMUP_STEPS + 1
    assert first["timed_images"] == 64 * (5 - WARMUP_STEPS) and first["train_s"] >= 0
    for size in [64] * 5 + [10]:  # both shapes seen: all timed
        clock.before_step(size)
    clock.end_epoch()
    assert clock.take()["warmup_excluded_steps"] == 0


def test_a_run_records_its_device_timing(synthetic_data):
    run = lab_run(epochs=2, train_subset=256, test_subset=64, batch_size=64, model="airbench",
                  optimizer="sgd", augment="alternating_flip")  # fmt: skip
    result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=0.01)
    timing = result["timing"]
    assert set(timing) == {"warmup_excluded_steps", "whitening_s", "train_s", "timed_images"}
    assert timing["warmup_excluded_steps"] == WARMUP_STEPS  # 256 / 64: no short last batch
    assert timing["timed_images"] == 2 * 256 - WARMUP_STEPS * 64
    assert 0 < timing["train_s"] <= result["train_seconds"] and timing["whitening_s"] > 0
