"""The one optimisation loop every protection shares: L-inf projected gradient descent (PGD).

Vocabulary as in torchattacks: `eps` (L-inf budget in [0, 1] pixel units, 8/255 = eight 8-bit
levels), `step_size`, `steps`, `random_start`. A method only supplies its losses (`methods/`); the
loop owns the budget, the randomness, the optional expectation over transformations (EOT), the
8-bit quantisation and the bookkeeping.
"""

from __future__ import annotations

import io as _io
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .targets.base import Target

logger = logging.getLogger(__name__)


@dataclass
class PGDConfig:
    eps: float = 8 / 255  # L-inf budget, [0, 1] units (the UI and CLI take it as an integer over 255)
    steps: int = 50  # gradient steps
    step_size: float | None = None  # per-step change; None: 2.5 * eps / steps (Madry et al.), at least 0.25/255
    random_start: bool = True  # start from a uniform point in the eps-ball
    # EOT: each step takes its loss on one random JPEG / resize / crop (`random_transform`) of the image,
    # the method's clean references transformed alike; over the steps PGD descends the expected loss
    robust: bool = False
    # the protection's own seed: one torch.Generator for every randomness of the protection (random
    # start, noise levels and noises, EOT draws, the noise control, SVD's noise augmentation) and the
    # seed of I2VGuard's clean video V0. Never use it as the seed of a video the protection is judged on.
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (x/255), got {self.eps}")
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"steps must be an integer >= 0, got {self.steps!r}")
        if self.step_size is not None and not 0.0 < self.step_size <= 1.0:
            raise ValueError(f"step_size must be in (0, 1], got {self.step_size}")

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return max(2.5 * self.eps / max(self.steps, 1), 0.25 / 255)


@dataclass
class Protection:
    """What `protect` returns: the guarded image and how it was made."""

    image: PIL.Image.Image  # guarded, 8-bit RGB, at the target's working resolution
    original: PIL.Image.Image  # the original at the same resolution (what the budget is measured against)
    method: str
    settings: dict  # method parameters + PGD config + model
    history: dict[str, list[float]] = field(default_factory=dict)  # loss terms per step
    seconds: float = 0.0  # wall time of the protection (setup included)

    def perturbation(self) -> np.ndarray:
        """guarded - original in 8-bit levels, int16 (H, W, 3)."""
        return np.asarray(self.image, dtype=np.int16) - np.asarray(self.original, dtype=np.int16)


# -- expectation over transformations ----------------------------------------------------------------
def jpeg_bpda(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG in the forward pass, identity in the backward pass (BPDA, Athalye et al. 2018)."""
    out = []
    for img in x.detach().clamp(0, 1):
        array = (img.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
        buffer = _io.BytesIO()
        PIL.Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(PIL.Image.open(buffer).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(decoded).permute(2, 0, 1))
    jpeg = torch.stack(out).to(x)
    return x + (jpeg - x).detach()


@dataclass(frozen=True)
class Transform:
    """One "posted online" transformation with fixed parameters, differentiable (JPEG through BPDA).
    Called on images (..., 3, H, W) in [0, 1] (a batch, or video frames (B, F, 3, H, W)), it does
    the same thing to every image, so a method can apply one step's transformation to the guarded
    image and to the clean references it compares it with.

    kind "jpeg": JPEG at `quality`; "resize": down by `scale` and back up; "crop": the window of
    `frac` of each side at (`top`, `left`) (fractions of the free room), resized back."""

    kind: str
    quality: int = 95
    scale: float = 1.0
    frac: float = 1.0
    top: float = 0.0
    left: float = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, *shape[-3:])
        h, w = shape[-2:]
        if self.kind == "jpeg":
            y = jpeg_bpda(x, self.quality)
        elif self.kind == "resize":
            size = (max(8, round(h * self.scale)), max(8, round(w * self.scale)))
            small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            y = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        elif self.kind == "crop":
            ch, cw = max(8, round(h * self.frac)), max(8, round(w * self.frac))
            top, left = int(self.top * (h - ch + 1)), int(self.left * (w - cw + 1))
            y = F.interpolate(x[..., top:top + ch, left:left + cw], size=(h, w), mode="bilinear", align_corners=False)
        else:
            raise ValueError(f"unknown transformation {self.kind!r}")
        return y.reshape(shape)


def random_transform(generator: torch.Generator) -> Transform:
    """One of three kinds, equally likely: JPEG at a quality drawn uniformly from 60..95 (inclusive),
    a down-and-up resize by a factor uniform in [0.5, 1), or a crop of a fraction uniform in [0.8, 1)
    of each side at a uniform position, resized back."""
    draw = lambda: float(torch.rand((), generator=generator, device=generator.device))  # noqa: E731
    kind = ("jpeg", "resize", "crop")[min(int(draw() * 3), 2)]
    if kind == "jpeg":
        return Transform("jpeg", quality=60 + min(int(draw() * 36), 35))
    if kind == "resize":
        return Transform("resize", scale=0.5 + 0.5 * draw())
    return Transform("crop", frac=0.8 + 0.2 * draw(), top=draw(), left=draw())


# -- the loop --------------------------------------------------------------------------------------
def quantize(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> np.ndarray:
    """Round to 8 bits and re-project so that every pixel stays within floor(eps*255) levels of the
    (8-bit) original and in [0, 255]. Returns uint8 (H, W, 3) of the first image."""
    levels = math.floor(eps * 255 + 1e-6)
    orig = (x[0].detach().permute(1, 2, 0).cpu().double().numpy() * 255).round()
    adv = (x_adv[0].detach().permute(1, 2, 0).cpu().double().numpy() * 255).round()
    adv = np.clip(adv, orig - levels, orig + levels)
    return np.clip(adv, 0, 255).astype(np.uint8)


def protect(target: Target, image: PIL.Image.Image, method, config: PGDConfig | None = None,
            callback=None) -> Protection:
    """Guard `image` against `target` with `method` (an object from `guard.methods`).

    callback(step, steps, terms) is called after every step with the step's loss terms (floats).
    A gradient method needs steps >= 1: with none it would return its starting point (the unchanged
    image, or with random_start a noise draw) under its own name; ValueError."""
    config = config or PGDConfig()
    if method.uses_gradient and config.steps < 1:
        raise ValueError(f"{method.name} needs at least 1 step (0 steps would optimise nothing; "
                         "the 'noise' method is the no-optimisation control)")
    start = time.perf_counter()
    original = target.prepare_image(image)
    x = target.to_tensor(original)  # (1, 3, H, W) in [0, 1], exactly the 8-bit pixels
    generator = torch.Generator(target.device).manual_seed(config.seed)
    eps, alpha = config.eps, config.alpha

    history: dict[str, list[float]] = {}
    if not method.uses_gradient:  # a control: a random point of the ball, nothing optimised
        x_adv = method.perturb(x, eps, generator)
    else:
        method.setup(target, x, generator)
        if config.random_start:
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = (x + (2 * u - 1) * eps).clamp(0, 1)
        else:
            x_adv = x.clone()
        for step in range(config.steps):
            x_adv.requires_grad_(True)
            transform = random_transform(generator) if config.robust else None
            terms = method.loss(target, x_adv, generator, transform)
            (grad,) = torch.autograd.grad(terms["loss"], x_adv)
            with torch.no_grad():
                # descend on the method's loss, then project onto the eps-ball and the valid range
                x_adv = x_adv - alpha * grad.sign()
                x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
            values = {k: float(v.detach()) for k, v in terms.items()}
            for k, v in values.items():
                history.setdefault(k, []).append(v)
            if callback is not None:
                callback(step + 1, config.steps, values)
        method.teardown()
    guarded = PIL.Image.fromarray(quantize(x_adv, x, eps))
    settings = dict(model=getattr(target, "name", target.family), **method.settings(), **asdict(config),
                    step_size_used=alpha)
    seconds = time.perf_counter() - start
    logger.info("%s: %d steps in %.1f s", method.name, config.steps if method.uses_gradient else 0, seconds)
    return Protection(image=guarded, original=original, method=method.name, settings=settings,
                      history=history, seconds=seconds)
