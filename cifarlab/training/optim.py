"""Optimizers and learning-rate schedules of a run: per-parameter-group lr and weight decay,
hyperparameters decoupled from batch size (airbench94), the schedules.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cifarlab.models import NORM_LAYERS
from cifarlab.training.settings import RunSettings

# Decoupled hyperparameters are stated per this many examples (airbench94's convention).
DECOUPLED_EXAMPLES = 1024


def lr_factor(settings: RunSettings) -> float:
    """torch's lr per unit of the run's `lr`: 1, or for `decoupled: true` (SGD) airbench94's
    conversion from a step size per 1,024 examples, momentum-normalised, to a mean-loss lr.

    Decoupled, lr means the same average step whatever the batch size and momentum: with
    gradients constant in time Nesterov momentum m multiplies a step by (1 + 1 / (1 - m))
    (airbench94's kilostep_scale), and a mean loss over B examples is 1/B of their summed loss.
    """
    if not settings.decoupled:
        return 1.0
    if settings.optimizer != "sgd":
        raise ValueError(f"decoupled hyperparameters are defined for sgd, not {settings.optimizer!r}")
    return settings.batch_size / (DECOUPLED_EXAMPLES * (1 + 1 / (1 - settings.momentum)))


def param_groups(module: nn.Module, settings: RunSettings, lr: float) -> list[dict]:
    """The trainable parameters of `module` as optimizer groups, each with its lr and weight decay.

    Two groups: `norm` (the parameters of normalisation layers: BatchNorm, LayerNorm, GroupNorm)
    and `other`; settings.param_groups maps a group to {lr_scale, weight_decay_scale} (both 1 when
    absent). Each group keeps `lr_scale`, torch's lr per unit of the run's lr, which the LR
    finder uses to sweep all groups together. Decoupled, weight_decay is the fraction decayed
    per 1,024 examples, independent of the lr and its scale: torch's coefficient is that over
    the group's lr (the decay per step is lr x coefficient).
    """
    members: dict[str, list[nn.Parameter]] = {"norm": [], "other": []}
    for layer in module.modules():
        group = "norm" if isinstance(layer, NORM_LAYERS) else "other"
        members[group].extend(p for p in layer.parameters(recurse=False) if p.requires_grad)
    factor, weight_decay = lr_factor(settings), settings.weight_decay
    groups = []
    for name, params in members.items():
        if not params:
            continue
        scales = settings.param_groups.get(name, {})
        lr_scale = factor * scales.get("lr_scale", 1.0)
        wd = weight_decay * scales.get("weight_decay_scale", 1.0)
        group = {"params": params, "name": name, "lr": lr * lr_scale, "lr_scale": lr_scale}
        group["weight_decay"] = wd
        if settings.decoupled:
            # The decay per step, lr x wd, is wd x factor at the run's lr; the LR finder keeps it
            # there while it sweeps the lr (`decay_per_step`), the schedule scales it with the lr.
            group.update(weight_decay=wd * factor / (lr * lr_scale), decay_per_step=wd * factor)
        groups.append(group)
    return groups


def implementation(module: nn.Module) -> dict:
    """How torch's SGD, Adam and AdamW update the parameters of `module`: one fused kernel on CUDA;
    elsewhere `foreach` (a few multi-tensor ops instead of a Python loop over parameters).

    foreach gives bit for bit the numbers of the per-parameter loop on the CPU (checked in
    tests/test_hotpath.py); fused does not (it groups the arithmetic otherwise, ~1e-7 apart), so
    it is kept to CUDA, where GPU runs are not bit-reproducible anyway. MPS keeps foreach.
    """
    on_cuda = any(p.is_cuda for p in module.parameters())
    return {"fused": True} if on_cuda else {"foreach": True}


def build_optimizer(module: nn.Module, settings: RunSettings, lr: float) -> torch.optim.Optimizer:
    """The run's optimizer over the trainable parameters of `module` (grouped by `param_groups`):
    sgd (momentum, nesterov), adam, adamw or yogi (`Yogi`, torch-optimizer's numbers).

    settings.eps null keeps each optimizer's own default (yogi's is 1e-3, not adam's 1e-8).
    Build it once `module` is on its device (`implementation` picks fused kernels on CUDA).
    """
    name, groups = settings.optimizer, param_groups(module, settings, lr)
    eps = {} if settings.eps is None else {"eps": settings.eps}
    kernels = implementation(module)
    if name == "sgd":
        momentum = settings.momentum
        # torch rejects nesterov without momentum
        nesterov = settings.nesterov and momentum > 0
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kernels)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **eps, **kernels)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **eps, **kernels)
    if name == "yogi":
        return Yogi(groups, lr=lr, **eps)
    raise ValueError(f"unknown optimizer {name!r}; use sgd, adam, adamw or yogi")


class Yogi(torch.optim.Optimizer):
    """Yogi (Zaheer et al., NeurIPS 2018) computing exactly what torch-optimizer's `Yogi` does (the
    same defaults, state and operations), with multi-tensor `torch._foreach_*` ops over a group's
    parameters instead of a Python loop over them.

    Why our own: torch.optim has no Yogi, and torch-optimizer's steps one parameter at a time in
    Python (a dozen kernel launches per tensor, each waited for by the interpreter on a GPU);
    no library offers a multi-tensor Yogi. tests/test_hotpath.py checks it against
    torch_optimizer.Yogi step for step. Its state ("step", "exp_avg", "exp_avg_sq" per parameter)
    is torch-optimizer's, so checkpoints load in either.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        initial_accumulator: float = 1e-6,
        weight_decay: float = 0.0,
    ):
        if lr <= 0.0 or eps < 0.0 or weight_decay < 0.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"yogi: lr {lr} must be positive, eps {eps} and weight_decay {weight_decay} not "
                f"negative, betas {betas} in [0, 1)"
            )
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "initial_accumulator": initial_accumulator,
            "weight_decay": weight_decay,
        }  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One Yogi step of `params` (those of `group` with a gradient), op for op torch-optimizer's."""
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("Yogi does not support sparse gradients, please consider SparseAdam instead")
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.full_like(p, group["initial_accumulator"])
                state["exp_avg_sq"] = torch.full_like(p, group["initial_accumulator"])
            state["step"] += 1
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
        squares = torch._foreach_mul(grads, grads)
        signs = torch._foreach_sub(exp_avg_sqs, squares)
        torch._foreach_sign_(signs)
        torch._foreach_addcmul_(exp_avg_sqs, signs, squares, value=-(1 - beta2))
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, [math.sqrt(1 - beta2 ** s["step"]) for s in states])
        torch._foreach_add_(denominators, group["eps"])
        steps = [-group["lr"] / (1 - beta1 ** s["step"]) for s in states]
        torch._foreach_addcdiv_(params, exp_avgs, denominators, steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: RunSettings, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LR schedule (call .step() after every optimizer step).

    constant: the lr throughout. onecycle: torch's OneCycleLR peaking at the lr (momentum is not
    cycled, so the configured momentum holds). cosine: linear warmup over `warmup_epochs`, then
    cosine decay to zero. linear (airbench94's): from `lr_start_factor` x lr up to the lr over
    `warmup_epochs` (fractions allowed), then linearly down to `lr_end_factor` x lr at the end.
    """
    total = settings.epochs * steps_per_epoch
    schedule = settings.schedule
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total, cycle_momentum=False
        )
    if schedule == "cosine":
        warmup = min(round(settings.warmup_epochs * steps_per_epoch), total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if schedule == "linear":
        warmup = min(round(settings.warmup_epochs * steps_per_epoch), total - 1)
        start, end = settings.lr_start_factor, settings.lr_end_factor

        def piecewise(step: int) -> float:
            if step < warmup:
                return start + (1 - start) * step / warmup
            return 1 + (end - 1) * min((step - warmup) / max(1, total - warmup), 1.0)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, piecewise)
    raise ValueError(f"unknown schedule {schedule!r}; use constant, onecycle, cosine or linear")
