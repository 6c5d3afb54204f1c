"""Protection settings: "fast" (the defaults of the app and the CLI, sized for a ZeroGPU visit) and
"reference" (full depth: every attention layer, every frame, 100 steps, Vid-Freeze over the whole noise
schedule; what the fast settings are checked against, `python -m guard evaluate --preset`, `benchmarks/bench_gpu.py`).

The freezing methods' fast settings follow what the published freezing attacks that work read: little
of the model, early in it, at high noise (MEDUSA: one early temporal block of SVD at the noise level
of step 4 of 25; Immune2V: Wan's blocks 0-3 at the first 10 of 25 steps; BadWorld: without the early,
high-noise timesteps such attacks do about nothing). So, on every family:
- every frame of the video the model makes: no frame subsampling (a protection judged on 25-frame
  videos is attacked on 25 frames);
- Vid-Freeze reads the first 4 attention layers in forward order and the forward stops after the
  fourth (`maps_only`); its noise levels come from the noisiest half of the schedule;
- `freeze` reads the denoiser's output (so it keeps the whole denoiser) at the noisiest half of the
  schedule, with 20 steps;
- `medusa` is its public code's setting (one early block, one high-noise level, 50 steps).
I2VGuard is no freezing attack: it needs the denoiser's output and a clean reference video, and its fast
setting takes fewer steps, a cheaper reference video (SVD family: 8 frames, 6 denoising steps) and
noise draws fixed at setup.

What each preset keeps of the effect, on the embedded model, is measured in the README ("Fast and
full depth"); on the other families it is not measured (no hub here).

CogVideoX-5B-I2V attacks its 49 frames only: at any other count diffusers replaces its learned
positional embedding with a sin-cos one (`CogVideoXTarget.check_num_frames`). Wan (81 frames; 121 for
TI2V-5B) and LTX-Video (161) are attacked at the video's own length: their RoPE grids and conditioning
video are those of that length, and 8 is no frame count they make (1 + 4k, 1 + 8k).
"""

from __future__ import annotations

#: steps and method parameters per method and preset; "frames" None = the model's own frame count
EARLY = {"layers": 4, "t_range": (0.5, 1.0)}  # the first 4 attention layers, the noisiest half of the schedule
PRESETS = {
    "freeze": {"reference": (100, {"noise_draws": None}), "fast": (20, {})},
    "vidfreeze": {"reference": (100, {}), "fast": (16, EARLY)},
    "medusa": {"reference": (50, {}), "fast": (50, {})},  # MEDUSA's public code: 50 iterations
    "i2vguard": {"reference": (100, {}), "fast": (10, {"frames": 8, "video_steps": 6, "noise_draws": 4})},
    "photoguard": {"reference": (200, {}), "fast": (50, {})},
    "noise": {"reference": (0, {}), "fast": (0, {})},
}

#: loop settings of a method's presets where they are not the loop's defaults: the PGD step as a fraction
#: of eps, and whether to start from a random point of the eps-ball. MEDUSA's code steps 0.02 in [-1, 1]
#: units at eps 16/255 in those units (8/255 and 2.55/255 in guard's [0, 1]: 0.32 of eps), from the clean image.
LOOP = {"medusa": {"step_of_eps": 0.32, "random_start": False}}

#: the fast preset of a model family where it differs from PRESETS (see the module docstring): the full-3D
#: attention families keep their own frame count, so I2VGuard's cheaper reference video takes fewer
#: denoising steps instead of fewer frames, and fewer PGD steps (its loss reads the whole transformer)
ALL_FRAMES_I2VGUARD = (6, {"video_steps": 4, "noise_draws": 2})
FAST_BY_FAMILY = {family: {"i2vguard": ALL_FRAMES_I2VGUARD} for family in ("cogvideox", "wan", "ltx")}


#: the default method of a model, where a method measured best on it (README "Results": the embedded model,
#: 4 photos x 4 unseen video seeds at 8/255: `freeze` flow ratio 0.785, the only one within 90% of the cut its
#: training law allows; Vid-Freeze's fast preset 0.827, MEDUSA 0.933). A model never measured (every hub
#: model: no hub here) takes Vid-Freeze's fast preset: the cheapest with a measured effect, and the one
#: whose Space visit fits a minute of half a ZeroGPU card (`freeze` reads the whole denoiser).
MEASURED_BEST = {"embedded": "freeze"}
UNMEASURED_DEFAULT = "vidfreeze"


def default_method(model: str) -> str:
    """The method the app and the CLI use for `model` when none is asked for (see MEASURED_BEST)."""
    return MEASURED_BEST.get(model, UNMEASURED_DEFAULT)


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
