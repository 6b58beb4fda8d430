"""airbench94's lookahead, a general run setting: an EMA of the weights that the weights are reset to."""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    """airbench94's lookahead: an EMA of the weights that the weights are reset to.

    Every `every` steps: ema <- ema + (1 - d) (w - ema), then w <- ema, with the decay
    d = decay x (step / total_steps) ** power growing from 0 (the EMA follows the weights) to
    `decay`. At the last step d = 1: training ends on the EMA. Every floating-point tensor of the
    state dict takes part (parameters and batch-norm statistics).

    The module's tensors are taken once, as a list, and updated in place with two multi-tensor
    ops (`torch._foreach_lerp_`, `torch._foreach_copy_`: the numbers of a loop of lerp_ and copy_),
    not by rebuilding the state dict at every update. So build it once `module` is on its device
    and keep the module's tensors in place (load_state_dict copies into them; `.to` would not).
    """

    def __init__(self, module: nn.Module, settings: dict, total_steps: int):
        self.every, self.decay, self.power = settings["every"], settings["decay"], settings["power"]
        self.total_steps = total_steps
        live = {k: v for k, v in module.state_dict(keep_vars=True).items() if v.is_floating_point()}
        self.keys = list(live)
        self.live = [v.detach() for v in live.values()]  # the module's own storage
        self.slow = [v.clone() for v in self.live]

    def decay_at(self, step: int) -> float:
        """The decay of the update after `step` steps (1-based); 1 at the last step."""
        return 1.0 if step >= self.total_steps else self.decay * (step / self.total_steps) ** self.power

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Call after optimizer step number `step` (counted over the whole training, from 1)."""
        if step % self.every and step < self.total_steps:
            return
        torch._foreach_lerp_(self.slow, self.live, 1 - self.decay_at(step))
        torch._foreach_copy_(self.live, self.slow)

    @property
    def ema(self) -> dict[str, torch.Tensor]:
        """The slow weights by state-dict key (views, not copies)."""
        return dict(zip(self.keys, self.slow, strict=True))

    def state_dict(self) -> dict:
        return {k: v.cpu() for k, v in self.ema.items()}

    def load_state_dict(self, state: dict) -> None:
        torch._foreach_copy_(self.slow, [state[key].to(v.device) for key, v in self.ema.items()])
