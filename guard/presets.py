"""Protection settings: "fast" (the defaults of the app and the CLI, sized for a ZeroGPU visit) and
"reference" (slow settings that the fast ones are checked against, `benchmarks/bench_gpu.py` and
`python -m guard evaluate --preset`).

What the fast settings change, each a lever measured in the README's performance section:
fewer PGD steps; fewer frames during the attack than at generation (attention maps over 8 frames
instead of 25); for I2VGuard a cheaper clean video V0 (fewer frames and denoising steps) and 4 noise
draws fixed at setup, so the clean image's reference maps are computed once instead of every step.
"""

from __future__ import annotations

#: steps and method parameters per method and preset; "frames" None = the model's own frame count
PRESETS = {
    "vidfreeze": {"reference": (100, {}), "fast": (16, {"frames": 8})},
    "i2vguard": {"reference": (100, {}), "fast": (10, {"frames": 8, "video_steps": 6, "noise_draws": 4})},
    "photoguard": {"reference": (200, {}), "fast": (50, {})},
    "noise": {"reference": (0, {}), "fast": (0, {})},
}


def attack_frames(target, frames: int | None) -> int | None:
    """A frame count the target accepts, at most its own: CogVideoX needs 1 + 4k frames."""
    if frames is not None and target.family == "cogvideox":
        frames = 1 + 4 * max(1, (frames - 1 + 3) // 4)
    if frames is None or frames >= target.num_frames:
        return None
    return frames


def settings_for(method: str, preset: str, target) -> tuple[int, dict]:
    """(steps, method parameters) of a preset for this target."""
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(PRESETS)}")
    if preset not in ("fast", "reference"):
        raise ValueError(f"preset must be 'fast' or 'reference', got {preset!r}")
    steps, params = PRESETS[method][preset]
    params = dict(params)
    if "frames" in params:
        params["frames"] = attack_frames(target, params["frames"])
        if params["frames"] is None:
            del params["frames"]
    return steps, params
