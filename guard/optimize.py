"""The one optimisation loop every protection shares: L-inf projected gradient descent (PGD).

Vocabulary as in torchattacks: `eps` (L-inf budget in [0, 1] pixel units, 8/255 = eight 8-bit
levels), `step_size`, `steps`, `random_start`. A method only supplies its losses (`methods/`); the
loop owns the budget, the randomness, the optional expectation over transformations (EOT), the
8-bit quantisation and the bookkeeping.

The photo is guarded at its own size. The perturbation lives at full size (1, 3, H, W); each step
draws one way the photo reaches the model (`guard.resize`: the diffusers pipeline's own Lanczos
resize, or a center crop to the model's aspect and a resize, half the time after a resize of the
whole photo by 0.9-1.1x), maps the guarded photo to the model's working size through it
(differentiably), and hands the method that working-size image, exactly the kind of image methods
have always seen. The gradient flows back through the resize to the full-size pixels, where the sign
step, the eps projection and the 8-bit quantisation happen; so the bound holds on every pixel of the
saved PNG, whatever the model's size.
"""

from __future__ import annotations

import copy
import io as _io
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .resize import KINDS, Resampler, View, draw_view
from .targets.base import Target, photo_of, with_photo

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
    # how the photo reaches the model (guard/resize.py): each step goes through one view drawn from the
    # generator: one of `views` ("pipeline": the diffusers pipeline's own resize of the whole photo;
    # "crop": center crop to the model's aspect, then resize), equally likely, half the time after a
    # resize of the whole photo by a factor uniform in `scales` (None: never)
    views: tuple[str, ...] = KINDS
    scales: tuple[float, float] | None = (0.9, 1.1)
    # True: center-crop and resize the photo to the model's working size first and guard that image, as
    # guard did before it guarded photos at their own size (the PNG then has the working size); for
    # comparisons (`guard evaluate --working-size`)
    working_size: bool = False

    def __post_init__(self):
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (x/255), got {self.eps}")
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"steps must be an integer >= 0, got {self.steps!r}")
        if self.step_size is not None and not 0.0 < self.step_size <= 1.0:
            raise ValueError(f"step_size must be in (0, 1], got {self.step_size}")
        self.views = tuple(self.views)
        if not self.views or any(v not in KINDS for v in self.views) or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct names from {KINDS}, got {self.views!r}")
        if self.scales is not None:
            self.scales = tuple(self.scales)
            if not (len(self.scales) == 2 and 0.5 <= self.scales[0] <= self.scales[1] <= 2.0):
                raise ValueError(f"scales must be (low, high) with 0.5 <= low <= high <= 2, got {self.scales!r}")

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return max(2.5 * self.eps / max(self.steps, 1), 0.25 / 255)


@dataclass
class Protection:
    """What `protect` returns: the guarded image and how it was made."""

    image: PIL.Image.Image  # guarded, 8-bit RGB, the photo's own size (PGDConfig.working_size: the model's); the
    #   photo's ICC profile in .info (PIL's PNG writer stores it)
    original: PIL.Image.Image  # the photo as guarded (what the budget is measured against), the same size
    method: str
    settings: dict  # method parameters + PGD config + model
    history: dict[str, list[float]] = field(default_factory=dict)  # loss terms per step
    seconds: float = 0.0  # wall time of the protection (setup included)
    setup_seconds: float = 0.0  # the method's setup (clean references), every view kind's included
    step_seconds: list[float] = field(default_factory=list)  # wall time of each PGD step (the first warms up)

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
        if photo_of(x) is not x:  # the photo behind a working-size image goes through the same change
            return with_photo(self(x.view_as(x)), self(photo_of(x)))  # view_as: the same image, unmarked
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
    (8-bit) original and in [0, 255]. Returns uint8 (H, W, 3) of the first image. Computed on the
    tensors' device in float32 (x holds 8-bit values exactly), so a 12-megapixel photo costs no
    float64 copies."""
    levels = math.floor(eps * 255 + 1e-6)
    orig = (x[0].detach().float() * 255).round()
    adv = (x_adv[0].detach().float() * 255).round()
    adv = torch.minimum(torch.maximum(adv, orig - levels), orig + levels).clamp(0, 255)
    return adv.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def setup_views(target: Target, x: torch.Tensor, method, config: PGDConfig, generator: torch.Generator) -> dict:
    """`method` set up for the first view kind, and a set-up copy of it for each other kind: their
    references (static video, clean video, clean maps) are those of the clean photo as that kind shows
    it to the model, at scale 1. Kinds that show the photo alike (a photo of the model's aspect, where
    the crop is the whole photo) share one. A scale change only resamples the same picture, so a scaled
    view keeps its kind's references."""
    working = (target.width, target.height)
    methods, done = {}, []
    with torch.no_grad():
        for kind in config.views:
            clean = view_of(View(kind), x, working)
            methods[kind] = next((m for other, m in done if torch.equal(other, clean)
                                  and photo_of(other).shape == photo_of(clean).shape), None)
            if methods[kind] is None:
                methods[kind] = copy.copy(method) if done else method
                methods[kind].setup(target, clean, generator)
                done.append((clean, methods[kind]))
    return methods


def view_of(view: View, x: torch.Tensor, working: tuple[int, int]) -> torch.Tensor:
    """The full-size photo x (1, 3, H, W) as `view` shows it to the model: at the working size (w, h),
    marked with the photo the pipeline is handed (`View.photo`), differentiably."""
    resampler = Resampler(view, (x.shape[-1], x.shape[-2]), working, x.device)
    return with_photo(resampler(x), view.photo(x, working))


def protect(target: Target, image: PIL.Image.Image, method, config: PGDConfig | None = None,
            callback=None) -> Protection:
    """Guard `image` (8-bit, any size) against `target` with `method` (an object from `guard.methods`).

    The guarded image has the photo's own size (with `config.working_size`, the model's working size)
    and keeps its ICC profile (`image.info["icc_profile"]`). Memory: a few full-size float32 tensors
    (x, x_adv, its gradient: 150 MB each at 4096 x 3072) besides the model's step at its working size;
    no graph outlives its step.

    callback(step, steps, terms) is called after every step with the step's loss terms (floats).
    A gradient method needs steps >= 1: with none it would return its starting point (the unchanged
    image, or with random_start a noise draw) under its own name; ValueError."""
    config = config or PGDConfig()
    if method.uses_gradient and config.steps < 1:
        raise ValueError(f"{method.name} needs at least 1 step (0 steps would optimise nothing; "
                         "the 'noise' method is the no-optimisation control)")
    start = time.perf_counter()
    original = target.prepare_image(image) if config.working_size else image.convert("RGB")
    x = target.to_tensor(original)  # (1, 3, H, W) in [0, 1], exactly the 8-bit pixels
    generator = torch.Generator(target.device).manual_seed(config.seed)
    eps, alpha = config.eps, config.alpha
    working = (target.width, target.height)

    history: dict[str, list[float]] = {}
    step_seconds, setup_seconds = [], 0.0
    if not method.uses_gradient:  # a control: a random point of the ball, nothing optimised
        x_adv = method.perturb(x, eps, generator)
    else:
        if config.working_size:
            methods = {None: method}
            method.setup(target, x, generator)
        else:
            methods = setup_views(target, x, method, config, generator)
        setup_seconds = _elapsed(start, target)
        if config.random_start:
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = (x + (2 * u - 1) * eps).clamp(0, 1)
        else:
            x_adv = x.clone()
        for step in range(config.steps):
            x_adv.requires_grad_(True)
            if config.working_size:
                step_method, x_in = method, x_adv
            else:  # the photo as one way of feeding it to the model shows it, at the working size
                view = draw_view(generator, config.views, config.scales)
                step_method, x_in = methods[view.kind], view_of(view, x_adv, working)
            transform = random_transform(generator) if config.robust else None
            terms = step_method.loss(target, x_in, generator, transform)
            (grad,) = torch.autograd.grad(terms["loss"], x_adv)
            values = {k: float(v.detach()) for k, v in terms.items()}
            del terms, x_in  # the step's graph goes with them
            with torch.no_grad():
                # descend on the method's loss at full size, then project onto the eps-ball and the valid
                # range (in place: at 12 megapixels every full-size temporary is 150 MB)
                delta = x_adv.detach().sub_(grad.sign_().mul_(alpha)).sub_(x).clamp_(-eps, eps)
                del grad
                x_adv = delta.add_(x).clamp_(0, 1)
            for k, v in values.items():
                history.setdefault(k, []).append(v)
            step_seconds.append(_elapsed(start, target) - setup_seconds - sum(step_seconds))
            if callback is not None:
                callback(step + 1, config.steps, values)
        for step_method in {id(m): m for m in methods.values()}.values():
            step_method.teardown()
    guarded = PIL.Image.fromarray(quantize(x_adv, x, eps))
    if image.info.get("icc_profile"):  # the colours mean what they meant in the photo
        guarded.info["icc_profile"] = image.info["icc_profile"]
    settings = dict(model=getattr(target, "name", target.family), **method.settings(), **asdict(config),
                    step_size_used=alpha, size=list(original.size), working=list(working))
    seconds = _elapsed(start, target)
    logger.info("%s: %d steps in %.1f s", method.name, config.steps if method.uses_gradient else 0, seconds)
    return Protection(image=guarded, original=original, method=method.name, settings=settings,
                      history=history, seconds=seconds, setup_seconds=setup_seconds, step_seconds=step_seconds)


def _elapsed(start: float, target: Target) -> float:
    """Seconds since `start`, after the target's GPU work queued so far has finished."""
    if target.device.type == "cuda":
        torch.cuda.synchronize(target.device)
    return time.perf_counter() - start
