"""The bounds of every number a person can give guard, shared by the app and the command line.

Both check their inputs against these before any model loads, and refuse a value out of bounds with
one sentence that names the parameter (`steps must be between 0 and 200, got -1`), raised as
`guard.io.InputError`. The app names its API parameters (`steps`, `video_steps`), the command line
its options (`--steps`, `--video-steps`).

Each upper bound can be changed with an environment variable, read once at import:

| variable | bound | default |
| --- | --- | --- |
| `GUARD_MAX_EPS` | L-inf budget, in 8-bit levels (x/255) | 32 |
| `GUARD_MAX_STEPS` | protection (PGD) steps | 200 |
| `GUARD_MAX_FRAMES` | frames of a generated video | 49 |
| `GUARD_MAX_VIDEO_STEPS` | denoising steps of a generated video | 50 |
| `GUARD_MAX_SIDE` | pixels on the longer side of a photo; a longer one is shrunk to fit, with a notice | 4096 |

A photo is guarded at its own size, so its size sets the memory and time of a protection (a few
full-size float tensors, 150 MB each at 4096 x 3072, besides the model); `MAX_SIDE` bounds them.
Larger photos are shrunk rather than refused: the visitor still gets a guarded photo, 4096 px on its
longer side by default, and the notice says so.
"""

from __future__ import annotations

import math
import os

from .io import InputError


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number, got {value!r}") from None


MAX_EPS = _env_int("GUARD_MAX_EPS", 32)
MAX_STEPS = _env_int("GUARD_MAX_STEPS", 200)
MAX_FRAMES = _env_int("GUARD_MAX_FRAMES", 49)
MAX_VIDEO_STEPS = _env_int("GUARD_MAX_VIDEO_STEPS", 50)
MAX_SIDE = _env_int("GUARD_MAX_SIDE", 4096)
MAX_SEED = 2**31 - 1
MAX_MOTION_BUCKET = 255  # SVD's motion_bucket_id is an embedding index of 0..255 in practice
MAX_FPS = 60


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high], else `InputError` naming `name`, the bounds and the value.

    Accepts ints, integral floats (2.0, as JSON and sliders send them) and numeric strings; refuses
    bools, fractions, nan and everything else."""
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or not math.isfinite(number) or not number.is_integer():
        raise InputError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    if not low <= number <= high:
        shown = int(number) if isinstance(value, (int, float)) else value
        raise InputError(f"{name} must be between {low} and {high}, got {shown!r}")
    return int(number)


def eps(value, name: str = "eps") -> int:
    """The L-inf budget in 8-bit levels: 1..MAX_EPS (0 would return the image unchanged)."""
    return whole_number(name, value, 1, MAX_EPS)


def steps(value, name: str = "steps") -> int:
    """Protection steps: 0..MAX_STEPS."""
    return whole_number(name, value, 0, MAX_STEPS)


def seed(value, name: str = "seed") -> int:
    return whole_number(name, value, 0, MAX_SEED)


def motion_bucket(value, name: str = "motion_bucket") -> int:
    return whole_number(name, value, 0, MAX_MOTION_BUCKET)


def frames(value, name: str = "frames") -> int | None:
    """Frames of a video: None or 0 = the model's default (returns None), else 2..MAX_FRAMES."""
    if value is None:
        return None
    try:
        number = whole_number(name, value, 0, MAX_FRAMES)
    except InputError:
        number = 1  # the same sentence for every refusal below
    if number == 1:
        raise InputError(f"{name} must be 0 (the model's default) or a whole number between 2 and {MAX_FRAMES}, "
                         f"got {value!r}")
    return number or None


def video_steps(value, name: str = "video_steps") -> int | None:
    """Denoising steps of a video: None or 0 = the model's default (returns None), else 1..MAX_VIDEO_STEPS."""
    if value is None:
        return None
    return whole_number(name, value, 0, MAX_VIDEO_STEPS) or None


def fps(value, name: str = "fps") -> int:
    return whole_number(name, value, 1, MAX_FPS)
