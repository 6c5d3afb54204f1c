"""Protection settings: "fast" (the defaults of the app and the CLI, sized for a ZeroGPU visit) and
"reference" (slow settings that the fast ones are checked against, `benchmarks/bench_gpu.py` and
`python -m guard evaluate --preset`).

What the fast settings change, each a lever measured in the README's performance section:
fewer PGD steps; on the SVD family fewer frames during the attack than at generation (attention maps
over 8 frames instead of 25; SVD's temporal position embedding of frames 0-7 is the same at any
length); for I2VGuard a cheaper clean video V0 (fewer frames and denoising steps) and noise draws fixed
at setup, so the clean image's reference maps are computed once instead of every step.

CogVideoX-5B-I2V always attacks its full 49 frames: at any other count diffusers replaces its learned
positional embedding with a sin-cos one (`CogVideoXTarget.check_num_frames`), so an attack on fewer
frames would optimise a transformer the 49-frame video never runs (freeze's fast preset too: 20 steps,
all frames). Its fast settings find the speed elsewhere: Vid-Freeze reads the frame maps of the first 4 transformer blocks only (of 42; Immune2V
attacks blocks 0-3 of Wan) and the forward stops after block 3; I2VGuard needs the denoiser's output
(its diffusion term), so it keeps the whole transformer and takes fewer steps, a 4-step V0 and 2 noise
draws.
"""

from __future__ import annotations

#: steps and method parameters per method and preset; "frames" None = the model's own frame count
PRESETS = {
    "freeze": {"reference": (100, {"noise_draws": None}), "fast": (20, {"frames": 8})},
    "vidfreeze": {"reference": (100, {}), "fast": (16, {"frames": 8})},
    "i2vguard": {"reference": (100, {}), "fast": (10, {"frames": 8, "video_steps": 6, "noise_draws": 4})},
    "medusa": {"reference": (50, {}), "fast": (50, {})},  # MEDUSA's public code: 50 iterations
    "photoguard": {"reference": (200, {}), "fast": (50, {})},
    "noise": {"reference": (0, {}), "fast": (0, {})},
}

#: the fast preset of a model family where it differs from PRESETS (see the module docstring)
FAST_BY_FAMILY = {
    "cogvideox": {
        "freeze": (20, {}),  # all 49 frames (see the module docstring); its loss reads the denoiser's output
        "vidfreeze": (16, {"layers": 4}),
        "i2vguard": (6, {"video_steps": 4, "noise_draws": 2}),
    },
    # Wan (2.1 I2V 14B, 2.2 I2V A14B, 2.2 TI2V-5B): all frames (81; 121 for TI2V-5B), never the SVD family's 8:
    # 8 is no frame count Wan makes (1 + 4k), and its RoPE grid and conditioning video are those of the
    # video's length. Vid-Freeze reads the first 4 of its 40 (TI2V-5B: 30) blocks, as Immune2V attacks Wan's
    # blocks 0-3, and the forward stops after block 3 (1.33 s an attack step against 12.4 s for all blocks,
    # Wan 2.1 14B on an H200; ../shared/NOTES.md). freeze and I2VGuard read the denoiser's output, so they
    # keep the whole transformer and take fewer steps, as on CogVideoX. Not yet evaluated on the real models.
    "wan": {
        "freeze": (20, {}),
        "vidfreeze": (16, {"layers": 4}),
        "i2vguard": (6, {"video_steps": 4, "noise_draws": 2}),
    },
}


def settings_for(method: str, preset: str, target) -> tuple[int, dict]:
    """(steps, method parameters) of a preset for this target. A "frames" parameter of at least the
    model's own count is dropped (the method then uses the model's)."""
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(PRESETS)}")
    if preset not in ("fast", "reference"):
        raise ValueError(f"preset must be 'fast' or 'reference', got {preset!r}")
    steps, params = PRESETS[method][preset]
    if preset == "fast":
        steps, params = FAST_BY_FAMILY.get(target.family, {}).get(method, (steps, params))
    params = dict(params)
    if params.get("frames") is not None and params["frames"] >= target.num_frames:
        del params["frames"]
    return steps, params
