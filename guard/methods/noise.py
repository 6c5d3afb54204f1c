"""The control: uniform random noise with the same L-inf budget. Every table needs it, because a
protection that does no better than noise protects nothing."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method


@dataclass
class Noise(Method):
    name = "noise"
    uses_gradient = False  # the loop draws a uniform point of the eps-ball and optimises nothing
