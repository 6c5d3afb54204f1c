"""What every protection method shares: the `Method` interface and the quantities several use."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

import numpy as np
import PIL.Image
import torch

from ..targets.base import Target


@dataclass
class Method:
    """A protection = its losses. The PGD loop (`guard.optimize.protect`) minimises `loss()["loss"]`.

    setup() computes what stays fixed during the attack (clean references, targets) without
    gradients; loss() is called once per PGD step with the current guarded image (B, 3, H, W) in
    [0, 1] and returns named scalar terms, "loss" being the one minimised.

    Every randomness comes from `generator`, the protection's own (seeded with `PGDConfig.seed`).
    In robust mode loss() also gets that step's `transform` (`guard.optimize.Transform`): the method
    applies it to the guarded image and to every reference computed from the clean image, so that a
    transformed guarded image is never compared with an untransformed reference. What a loss pulls
    toward (the gray image, the target video) is what the model should see whatever happened to the
    photo: kept.

    Options are checked when the method is built: an option named in `OPTIONS` (one name, one
    meaning and one range in every method) raises ValueError naming the field, its range and the
    value given."""

    name = ""
    uses_gradient = True

    def __post_init__(self):
        for field in fields(self):
            if field.name in OPTIONS:
                check_option(field.name, getattr(self, field.name))

    def settings(self) -> dict:
        return {"method": self.name, **asdict(self)}

    def setup(self, target: Target, x: torch.Tensor, generator: torch.Generator) -> None:
        pass

    def loss(self, target: Target, x_adv: torch.Tensor, generator: torch.Generator,
             transform=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def teardown(self) -> None:
        """Drop references to tensors kept by setup (they can be GBs on a real model)."""
        for key, value in list(vars(self).items()):
            if isinstance(value, (torch.Tensor, list, dict)) and key not in self.__dataclass_fields__:
                setattr(self, key, None)


def pull_toward_image(kind: str, like: torch.Tensor) -> torch.Tensor:
    """The image an encoder attack pulls toward (`pull_toward`), shaped like `like` (B, 3, H, W) in [0, 1].

    "gray": a flat mid-gray image (PhotoGuard's demo target): the latent of a picture with no content.
    "pattern": a fixed high-contrast stripe pattern (as Mist-style attacks use): the latent of a
    texture that the decoder renders as visible artefacts."""
    check_option("pull_toward", kind)
    b, _, h, w = like.shape
    if kind == "gray":
        return torch.full_like(like, 0.5)
    yy, xx = torch.meshgrid(torch.arange(h, device=like.device), torch.arange(w, device=like.device), indexing="ij")
    stripes = ((xx + yy) // 8 % 2).to(like.dtype)
    return torch.stack([stripes, 1 - stripes, stripes], dim=0).expand(b, 3, h, w).clone()


def static_video_latents(target: Target, image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Latents of a video in which every frame is `image`: (B, F', C, h, w), no gradient."""
    with torch.no_grad():
        frames = image.unsqueeze(1).expand(-1, num_frames, -1, -1, -1)
        return target.encode_video(frames)


def to_pil(x: torch.Tensor) -> PIL.Image.Image:
    array = (x[0].detach().permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(array)


def attention_energy(maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared Frobenius norm of the F x F maps, divided by F.

    For rows that sum to one this is 1/F when every row is uniform (attention spread evenly over
    frames) and 1 when every row is one-hot (each frame copies a single frame)."""
    assert maps, "no attention maps were captured: does the target record this model's layers?"
    return torch.stack([m.float().pow(2).sum((-2, -1)).mean() / m.shape[-1] for m in maps]).mean()


def attention_distance(maps: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared Frobenius distance between maps, divided by F
    (the mean squared L2 distance between matching rows): 0 when equal, at most 2."""
    assert len(maps) == len(reference) > 0, f"{len(maps)} maps vs {len(reference)} reference maps"
    return torch.stack([(m.float() - r.float()).pow(2).sum((-2, -1)).mean() / m.shape[-1]
                        for m, r in zip(maps, reference)]).mean()


# -- options: what each accepts, written once -------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def at_least(low, integer: bool = False, optional: bool = False) -> tuple:
    """An option that is a number (an int when `integer`) >= low, or None when `optional`."""
    is_kind = _is_int if integer else _is_number

    def accepts(value) -> bool:  # types first: comparing a string with a number raises TypeError
        return (optional and value is None) or (is_kind(value) and value >= low)  # NaN fails >=

    return accepts, f"{'None or ' if optional else ''}{'an int' if integer else 'a number'} >= {low}"


def ordered_pair(low, high, integer: bool = False, optional: bool = False) -> tuple:
    """An option that is a pair (lo, hi) of numbers (ints when `integer`) with low <= lo <= hi <= high,
    or None when `optional`. A list is accepted as well as a tuple (options read back from JSON)."""
    is_kind = _is_int if integer else _is_number

    def accepts(value) -> bool:
        return (optional and value is None) or (
            isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_kind, value))
            and low <= value[0] <= value[1] <= high)

    kind = "(low, high) ints" if integer else "(low, high)"
    return accepts, f"{'None or ' if optional else ''}{kind} with {low} <= low <= high <= {high}"


def one_of(*choices: str) -> tuple:
    """An option that is one of the strings `choices`."""
    def accepts(value) -> bool:
        return value in choices

    return accepts, " or ".join(map(repr, choices))


#: every method option, by name: (is the value accepted, what is accepted, in words)
OPTIONS = {
    "t_range": ordered_pair(0, 1),  # fraction of the sampling schedule (0 = least noise, 1 = most)
    "frames": at_least(2, integer=True, optional=True),  # motion needs two frames; None: the model's count
    "noise_draws": at_least(1, integer=True, optional=True),  # None: a fresh draw every step
    "buckets": ordered_pair(0, 255, integer=True, optional=True),  # SVD's motion_bucket_id is in 0..255
    "layers": at_least(1, integer=True, optional=True),  # None: every attention layer
    "layer": at_least(1, integer=True, optional=True),  # one layer, counted from 1 in forward order; None: the method's
    "video_steps": at_least(1, integer=True, optional=True),  # None: the model's default
    "video_step": at_least(0, integer=True),  # a denoising step's index, 0 = the first (noisiest)
    "tau1": at_least(0),  # hinge thresholds: a distance
    "tau2": at_least(0),
    "alpha": at_least(0),  # loss weights: a negative one would reward the opposite
    "beta": at_least(0),
    "gamma": at_least(0),
    "lam_image": at_least(0),
    "pull_toward": one_of("gray", "pattern"),  # see pull_toward_image
    "distribution": one_of("sign", "uniform"),  # the noise control's
}


def check_option(name: str, value) -> None:
    """Raise ValueError naming the option, what it accepts and the value, unless OPTIONS[name] accepts it."""
    accepts, accepted = OPTIONS[name]
    if not accepts(value):
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
