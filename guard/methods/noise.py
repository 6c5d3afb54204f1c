"""The control: random noise with the same L-inf budget. Every table needs it, because a protection
that does no better than noise protects nothing.

distribution "sign" (default): every pixel channel moves by exactly +eps or -eps (clipped to [0, 1]),
the full budget, as much as a saturated sign-gradient (PGD) attack spends, so the control's energy
matches the attacks' (uniform noise in the ball has 2.6-4.8 dB less than the PGD results at the same
eps, which flatters every method). "uniform": a uniform point of the eps-ball (the earlier control).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method


@dataclass
class Noise(Method):
    name = "noise"
    uses_gradient = False  # nothing is optimised: the loop calls perturb() once
    distribution: str = "sign"  # "sign": +-eps per pixel channel; "uniform": uniform in [-eps, eps]

    def perturb(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """The control image: x plus noise drawn from `generator`, within eps of x and in [0, 1]."""
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = torch.where(u < 0.5, -eps, eps) if self.distribution == "sign" else (2 * u - 1) * eps
        return (x + delta).clamp(0, 1)
