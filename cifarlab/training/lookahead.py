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
    """

    def __init__(self, module: nn.Module, settings: dict, total_steps: int):
        self.every, self.decay, self.power = settings["every"], settings["decay"], settings["power"]
        self.total_steps = total_steps
        self.ema = {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after `step` steps (1-based); 1 at the last step."""
        return 1.0 if step >= self.total_steps else self.decay * (step / self.total_steps) ** self.power

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Call after optimizer step number `step` (counted over the whole training, from 1)."""
        if step % self.every and step < self.total_steps:
            return
        decay, state = self.decay_at(step), module.state_dict()
        for key, ema in self.ema.items():
            ema.lerp_(state[key], 1 - decay)
            state[key].copy_(ema)

    def state_dict(self) -> dict:
        return {k: v.cpu() for k, v in self.ema.items()}

    def load_state_dict(self, state: dict) -> None:
        for key, ema in self.ema.items():
            ema.copy_(state[key])
