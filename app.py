"""guard's Space: protect a photo, then watch what an image-to-video model makes of it.

UI and wiring only: layout, events, the checks made before a job is queued, and the `@spaces.GPU`
entry points. The protection, the models, the measurements, the verdict, the stored example results
and the image/video files live in `guard/` (shared with the CLI, the scripts and the tests).

Endpoints (also for `gradio_client`): "/protect_and_animate", "/protect", "/animate",
"/survive_posting"; their parameters are named after the controls (image, method, eps, steps, model,
seed, ...). A value out of bounds is refused before the job is queued, with a sentence naming the
parameter.
"""

import spaces  # noqa: I001  first: on ZeroGPU it must patch torch before anything initialises CUDA

import contextlib
import dataclasses
import html
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import matplotlib
import matplotlib.figure
import matplotlib.ticker
import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from guard import example_cache
from guard import io as gio
from guard import limits, report
from guard.methods import METHODS, get_method
from guard.optimize import PGDConfig, Protection, protect
from guard.presets import PRESETS, settings_for
from guard.quiet import quiet_third_party
from guard.targets import DEFAULT_MODEL, EMBEDDED_PATH, MODELS, Target, load_target

logger = logging.getLogger("guard.app")
quiet_third_party()

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# -- limits, checked on the server (the sliders only suggest them) ------------------------------------
# eps, steps, frames and video steps: guard/limits.py (GUARD_MAX_EPS, GUARD_MAX_STEPS, GUARD_MAX_FRAMES,
# GUARD_MAX_VIDEO_STEPS), shared with the command line
MAX_EPS, MAX_STEPS, MAX_SEED = limits.MAX_EPS, limits.MAX_STEPS, limits.MAX_SEED
MAX_FRAMES, MAX_VIDEO_STEPS = limits.MAX_FRAMES, limits.MAX_VIDEO_STEPS
DEFAULT_EPS = 8
# default steps: the "fast" preset's per method (guard/presets.py), or GUARD_DEFAULT_STEPS for all
DEFAULT_STEPS_OVERRIDE = os.environ.get("GUARD_DEFAULT_STEPS")
# photos are guarded at their own size, up to GUARD_MAX_SIDE px a side (guard/limits.py): larger ones are
# shrunk to fit first, with a notice
MAX_SIDE = limits.MAX_SIDE
MAX_FILE_SIZE = os.environ.get("GUARD_MAX_FILE_SIZE", "25mb")  # uploads above this are refused by Gradio
REQUEST_DIR_MAX_AGE_S = 3600  # per-request folders older than this are removed
# the queue: jobs waiting in all (GUARD_QUEUE_SIZE), jobs queued or running per visitor (a page or a
# gradio_client session: 1) and per client address (GUARD_JOBS_PER_ADDRESS), and the seconds one job may
# run (GUARD_MAX_JOB_SECONDS; on ZeroGPU the @spaces.GPU duration below also bounds it)
QUEUE_SIZE = int(os.environ.get("GUARD_QUEUE_SIZE", "20"))
JOBS_PER_SESSION = 1
JOBS_PER_ADDRESS = int(os.environ.get("GUARD_JOBS_PER_ADDRESS", "3"))
MAX_JOB_SECONDS = float(os.environ.get("GUARD_MAX_JOB_SECONDS", "600"))

# -- ZeroGPU time reservation ---------------------------------------------------------------------------
# Seconds of GPU per unit of work, per model: `fixed` (moving inputs, VAE decode, writing), `pgd_step`
# (one protection step: forward + backward through the denoiser at the model's default frame count, scaled
# down for the fewer frames a preset attacks) and
# `denoise_frame_step` (one denoising step of one frame, classifier-free guidance included).
# SVD-XT and CogVideoX from benchmarks/bench_gpu.py on one H100 (bf16, README "Speed and memory"):
# SVD-XT generation 20.6 s for 25 steps x 25 frames (0.033 s a frame-step, decode included), a
# protection step 0.56 s at 8 of its 25 frames (1.75 s x 8/25); CogVideoX 1.91 s a step of 49 frames
# (0.039, plus decode), a protection step 5.9 s at all 49 frames (CogVideoX attacks at 49 only; its fast
# Vid-Freeze reads 4 of 42 blocks, so this over-reserves it until re-measured). `fixed` covers
# I2VGuard's setup (its clean video: 3.5-3.9 s; made twice when the photo's aspect differs from the
# model's, once per view kind: guard/optimize.py `setup_views`, not yet measured on a GPU) and the decode. SVD (14 frames) is scaled from SVD-XT;
# the embedded model is a CPU model. A ZeroGPU half card is slower than an H100: keep the margin.
GPU_COST = {
    "embedded": dict(fixed=5.0, pgd_step=0.10, denoise_frame_step=0.004, frames=8, video_steps=12),
    "svd": dict(fixed=15.0, pgd_step=1.0, denoise_frame_step=0.04, frames=14, video_steps=25),
    "svd-xt": dict(fixed=15.0, pgd_step=1.75, denoise_frame_step=0.04, frames=25, video_steps=25),
    "cogvideox": dict(fixed=30.0, pgd_step=6.0, denoise_frame_step=0.05, frames=49, video_steps=50),
    "tiny-svd": dict(fixed=2.0, pgd_step=0.05, denoise_frame_step=0.01, frames=4, video_steps=3),
    "tiny-cogvideox": dict(fixed=2.0, pgd_step=0.05, denoise_frame_step=0.01, frames=9, video_steps=3),
}
MIN_GPU_SECONDS, MAX_GPU_SECONDS = 10, 600

# -- models offered ---------------------------------------------------------------------------------------
# short labels: the dropdown is narrow on a phone
MODEL_LABELS = {
    "embedded": "embedded (small, runs on a CPU)",
    "svd": "Stable Video Diffusion (GPU)",
    "svd-xt": "Stable Video Diffusion XT (GPU)",
    "cogvideox": "CogVideoX-5B I2V (GPU)",
    "tiny-svd": "tiny-svd (random weights, tests)",
    "tiny-cogvideox": "tiny-cogvideox (random weights, tests)",
}
#: what guard has measured on each model, shown under the model's name (the page promises no more)
MODEL_NOTES = {
    "embedded": "On this model, guard's evaluation (README, \"Evaluation\") measured Vid-Freeze cutting a "
                "video's motion by 19% on average at 8/255 (8-29% across four photos), more than noise of the "
                "same budget: a measurable effect, not yet a protection. The verdict under each result says "
                "what happened to your photo.",
    "svd": "guard has not yet evaluated this model (it needs a machine with hub access): trust the verdict "
           "under each result, not a method's name.",
    "tiny-svd": "Random weights, for tests: its videos are noise, and no verdict on it means anything.",
}
MODEL_NOTES.update({"svd-xt": MODEL_NOTES["svd"], "cogvideox": MODEL_NOTES["svd"],
                    "tiny-cogvideox": MODEL_NOTES["tiny-svd"]})
METHOD_LABELS = {
    "vidfreeze": "Vid-Freeze (aims to freeze the video)",
    "freeze": "Freeze (guard's own: still-video prediction at high noise; experimental)",
    "i2vguard": "I2VGuard (aims to ruin the video)",
    "photoguard": "PhotoGuard (encoder attack, a baseline)",
    "noise": "Random noise of the same budget (the control)",
}
# The big models run in bfloat16 on a GPU (half the memory of float32 with its exponent range, which
# the attack's gradients need); the small ones in float32 everywhere.
BIG_MODELS = {"svd", "svd-xt", "cogvideox"}


def dtype_for(model: str) -> torch.dtype:
    return torch.bfloat16 if model in BIG_MODELS and DEVICE == "cuda" else torch.float32


def listed_models() -> list[str]:
    """The models this Space offers: GUARD_MODELS (comma-separated names of `guard.targets.MODELS`) if
    set; else the embedded model, plus SVD-XT and CogVideoX where a GPU is present or
    GUARD_HUB_MODELS=1. Falls back to tiny-svd (with a banner) when nothing else can load."""
    requested = os.environ.get("GUARD_MODELS", "")
    if requested.strip():
        names = [n.strip() for n in requested.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            logger.warning("GUARD_MODELS: ignoring unknown names %s (known: %s)", unknown, ", ".join(MODELS))
        names = [n for n in names if n in MODELS]
    else:
        names = [DEFAULT_MODEL]
        if DEVICE == "cuda" or os.environ.get("GUARD_HUB_MODELS") == "1":
            names += ["svd-xt", "cogvideox"]
    if "embedded" in names and not (EMBEDDED_PATH / "model_index.json").is_file():
        logger.warning("the embedded model is not in %s: not offered", EMBEDDED_PATH)
        names.remove("embedded")
    return names or ["tiny-svd"]


AVAILABLE_MODELS = listed_models()
_targets: dict[str, Target] = {}
_targets_lock = threading.Lock()


def refusal(message: str) -> gr.Error:
    """A gr.Error for an expected refusal (bad input, a limit): one sentence on the page, no traceback
    on the server's console."""
    return gr.Error(message, print_exception=False)


def get_target(model: str) -> Target:
    """The loaded target of a listed model; loaded once per process, then reused."""
    if model not in AVAILABLE_MODELS:  # a name a visitor typed is never loaded
        raise refusal(f"model must be one of {', '.join(AVAILABLE_MODELS)}, got {model!r}: it is not offered here.")
    with _targets_lock:
        if model not in _targets:
            start = time.perf_counter()
            _targets[model] = load_target(model, device=DEVICE, dtype=dtype_for(model))
            logger.info("loaded %s on %s in %.1f s", model, DEVICE, time.perf_counter() - start)
        return _targets[model]


# Load at import: the first model (GUARD_PRELOAD=first), every listed model (all) or none (none). On
# ZeroGPU the default is all: each @spaces.GPU call runs in a forked worker, so a model first loaded
# there would be loaded again for every request; weights loaded at import are moved to the GPU once.
_preload = os.environ.get("GUARD_PRELOAD", "all" if os.environ.get("SPACES_ZERO_GPU") else "first")
for _name in {"all": AVAILABLE_MODELS, "none": []}.get(_preload, AVAILABLE_MODELS[:1]):
    get_target(_name)


class UploadedImage(gr.Image):
    """A gr.Image input that hands the uploaded file over untouched: `guard.io.load_image` reads,
    checks and converts it. (Gradio's own preprocessing re-encodes a non-RGB upload as lossy WebP and
    answers a file that is not an image with a bare "Error".)"""

    is_template = True  # the page shows it with Gradio's image component

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path is None or (payload.url or "").startswith("data:"):  # a pasted data URL
            return super().preprocess(payload)
        return str(payload.path)


# Controls with Gradio's own check of the value removed: the value reaches the entry point, which (like
# the check made before queueing) refuses one out of bounds with a sentence naming the parameter.
# Gradio's check says only "Value -1 is less than minimum value 0." and, run before queueing, answers an
# API client with a bare "400 Bad Request".
class NamedSlider(gr.Slider):
    is_template = True

    def preprocess(self, payload):
        return payload


class NamedNumber(gr.Number):
    is_template = True

    def preprocess(self, payload):
        return payload


class NamedRadio(gr.Radio):
    is_template = True

    def preprocess(self, payload):
        return payload


class NamedDropdown(gr.Dropdown):
    is_template = True

    def preprocess(self, payload):
        return payload


# -- small helpers ----------------------------------------------------------------------------------------
def request_dir() -> Path:
    """A fresh folder for one request's files (random name: two visitors never share one); folders
    older than REQUEST_DIR_MAX_AGE_S are removed on the way."""
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "guard-requests"
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > REQUEST_DIR_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="req-", dir=root))


def safe_stem(path: str | None) -> str:
    """A file stem for downloads, from the upload's name: letters, digits, '-' and '_' only."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path or "image").stem).strip("_")[:40]
    return stem or "image"


class JobTooLong(Exception):
    """A job ran past MAX_JOB_SECONDS (raised from a progress callback, between steps)."""


@contextlib.contextmanager
def visitor_errors():
    """Turns what can go wrong into one sentence on the page. Expected refusals print nothing on the
    server's console; an unexpected failure is logged once, with its traceback."""
    try:
        yield
    except gr.Error:
        raise
    except gio.InputError as e:
        raise refusal(str(e)) from None
    except JobTooLong:
        raise refusal(f"This job ran past the limit of {MAX_JOB_SECONDS:.0f} s per job and was stopped: try fewer "
                      "steps or frames.") from None
    except ValueError as e:  # a setting the model refuses (e.g. a frame count CogVideoX cannot make)
        raise refusal(f"These settings cannot be used: {e}") from None
    except torch.OutOfMemoryError:
        raise refusal("The model ran out of memory: try fewer frames or fewer steps.") from None
    except Exception:
        logger.exception("unexpected failure")
        raise refusal("Something went wrong on our side; please try again, or with other settings.") from None


def checked(function, *args):
    """`function(*args)` (a check of guard.limits) with its InputError as a refusal."""
    try:
        return function(*args)
    except gio.InputError as e:
        raise refusal(f"{e}.") from None


def new_state(state) -> dict:
    """The visitor's session state: the notices already shown (each is shown once per image)."""
    return {"notices": set(), **(state or {})}


def notify(state: dict, key: str, notice: str, kind: str = "info") -> None:
    """Shows a notice about an image on the page ("info" or "warning"), once per session."""
    if (key, notice) not in state["notices"]:
        state["notices"].add((key, notice))
        (gr.Warning if kind == "warning" else gr.Info)(notice)


def open_upload(image: str | None, state: dict) -> PIL.Image.Image:
    """The upload as 8-bit RGB, upright, at its own size (shrunk to MAX_SIDE a side if larger), with
    its ICC profile; notices (conversions, shrinking) go to the page."""
    if not image:
        raise refusal("Upload an image first (or click one of the examples).")
    picture, notices = gio.load_image(image, MAX_SIDE)
    key = example_cache.file_digest(image)
    for notice in notices:
        notify(state, key, notice, "warning")
    return picture


def pick_seed(seed, randomize_seed: bool) -> int:
    if randomize_seed:
        return secrets.randbelow(MAX_SEED + 1)
    return checked(limits.seed, seed)


def video_options(target: Target, frames, motion_bucket, video_steps) -> dict:
    """Keyword arguments of `Target.generate` from the advanced controls (0 = the model's default)."""
    options = dict(num_frames=checked(limits.frames, frames), num_inference_steps=checked(limits.video_steps, video_steps))
    bucket = checked(limits.motion_bucket, motion_bucket)
    if target.family == "svd":  # SVD's motion conditioning; CogVideoX has none
        options["motion_bucket_id"] = bucket
    if options["num_frames"] == 1:
        raise gr.Error("Frames must be at least 2 (or 0 for the model's default).")
    target.check_num_frames(options["num_frames"])  # e.g. CogVideoX-5B-I2V: 49 only (a ValueError: one sentence)
    return options


def default_steps(method: str) -> int:
    """The steps slider's value for a method: the "fast" preset's, unless GUARD_DEFAULT_STEPS is set."""
    if DEFAULT_STEPS_OVERRIDE is not None:
        return min(int(DEFAULT_STEPS_OVERRIDE), MAX_STEPS)
    return min(PRESETS.get(method, PRESETS["vidfreeze"])["fast"][0], MAX_STEPS)


#: the page's defaults: what an example's stored result was made with (guard/example_cache.py)
DEFAULTS = dict(method="vidfreeze", eps=DEFAULT_EPS, steps=default_steps("vidfreeze"), model=AVAILABLE_MODELS[0],
                seed=0, randomize_seed=False, frames=0, motion_bucket=127, video_steps=0, robust=False)


def check_method(method) -> str:
    if method not in METHODS:
        raise refusal(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    return method


def make_method(method: str, target: Target):
    """The method object with the "fast" preset's parameters (as the CLI's default)."""
    check_method(method)
    _, params = settings_for(method, "fast", target)
    return get_method(method, **params)


def protection_seed(seed: int) -> int:
    """The protection's own seed for a visitor's seed: above every seed a video can have (0..MAX_SEED),
    so that a protection never sees the seed of the videos it is shown against (I2VGuard's clean video
    and every noise draw come from this seed)."""
    return MAX_SEED + 1 + seed


#: the perturbation view: the whole change fits in DISPLAY_SIDE px, beside a CROP_SIDE px crop at 100%
DISPLAY_SIDE, CROP_SIDE, GUTTER = 768, 256, 8


def perturbation_view(protection: Protection, eps_levels: int) -> np.ndarray:
    """The change made visible: -eps..+eps levels mapped to black..white, 0 to mid-gray. A photo longer
    than DISPLAY_SIDE is shown whole, downscaled by keeping every n-th pixel (averaging would blur
    the grain of the change into gray), with a red frame around its centre, and beside it that
    centre as a CROP_SIDE-px crop at 100% (one pixel of the photo per pixel): what the change looks
    like at real size. uint8 (h, w, 3)."""
    delta = protection.perturbation().astype(np.float32)  # (H, W, 3), 8-bit levels
    change = np.clip(127.5 + delta * (127.5 / max(eps_levels, 1)), 0, 255).round().astype(np.uint8)
    height, width = change.shape[:2]
    if max(height, width) <= DISPLAY_SIDE:
        return change
    whole = PIL.Image.fromarray(change)
    factor = DISPLAY_SIDE / max(height, width)
    whole = whole.resize((max(1, round(width * factor)), max(1, round(height * factor))), PIL.Image.Resampling.NEAREST)
    side_h, side_w = min(CROP_SIDE, height), min(CROP_SIDE, width)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    crop = PIL.Image.fromarray(change[top:top + side_h, left:left + side_w])
    PIL.ImageDraw.Draw(whole).rectangle(
        [left * factor, top * factor, (left + side_w) * factor, (top + side_h) * factor], outline=(220, 0, 0), width=2)
    view = PIL.Image.new("RGB", (whole.width + GUTTER + crop.width, max(whole.height, crop.height)), (255, 255, 255))
    view.paste(whole, (0, 0))
    view.paste(crop, (whole.width + GUTTER, 0))
    return np.asarray(view)


def deadline_after(seconds: float | None = None) -> float:
    """When a job started now must stop: MAX_JOB_SECONDS later (read at each call)."""
    return time.monotonic() + (MAX_JOB_SECONDS if seconds is None else seconds)


def pgd_progress(progress, label: str, deadline: float):
    """protect's callback(step, total, terms) -> the page's progress bar; stops a job past its deadline."""
    def callback(step, total, terms):
        if time.monotonic() > deadline:
            raise JobTooLong
        progress((step, total), desc=f"{label}: step {step}/{total}, loss {terms.get('loss', float('nan')):.4g}")
    return callback


def denoise_progress(progress, label: str, deadline: float):
    """generate's callback(step, total) -> the page's progress bar; stops a job past its deadline."""
    def callback(step, total):
        if time.monotonic() > deadline:
            raise JobTooLong
        progress((step, total), desc=f"{label}: denoising step {step}/{total}")
    return callback


# -- numbers, verdict, plot ----------------------------------------------------------------------------------
def _db(x) -> str:
    return "identical" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:.2f} dB"


def _num(x, digits=3, unit="") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}{unit}"


def numbers_html(numbers: dict | None, posted: bool = False) -> str:
    """The measured numbers as a small HTML table: one column for the guarded photo, one for the
    control (random noise of the same budget) when there is one. Values never wrap (CSS)."""
    if not numbers:
        return ""
    control = numbers.get("control")
    columns = ["guarded"] + (["control"] if control else [])
    rows = []

    def row(label, hint, key, part, fmt):
        values = [fmt(numbers[part].get(key))] + ([fmt(control[part].get(key))] if control else [])
        rows.append((label, hint, values))

    row("PSNR photo vs original", "higher = less visible", "psnr", "image", _db)
    row("SSIM photo vs original", "1 = identical", "ssim", "image", lambda x: _num(x, 4))
    row("largest pixel change", "in 8-bit levels" if posted else "in 8-bit levels, at most eps", "linf", "image",
        lambda x: f"{x}/255")
    if numbers.get("video"):
        row("motion of its video", "mean optical flow", "flow_guarded", "video", lambda x: _num(x, 3, " px/f"))
        row("motion ratio to the original's", "< 1: moves less (frozen)", "flow_ratio", "video", _num)
        row("frame-change ratio", "1 - SSIM of frames, to the original's", "change_ratio", "video", _num)
        row("video PSNR vs the original's", "lower = further (ruined)", "disruption_psnr", "video", _db)
        row("video SSIM vs the original's", "lower = further", "disruption_ssim", "video", lambda x: _num(x, 4))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th scope='row'>{html.escape(label)}<small>{html.escape(hint)}</small></th>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
        for label, hint, values in rows)
    notes = ["after posting, all compared with the posted original"] if posted else []
    if control:
        notes.append("control: the original plus random noise of the same budget")
    if numbers.get("video"):
        notes.append(f"the {'posted ' if posted else ''}original's video moves "
                     f"{_num(numbers['video'].get('flow_original'), 3)} px/frame")
    caption = f"<caption>{html.escape('; '.join(notes))}</caption>" if notes else ""
    return f"<table class='guard-numbers'>{caption}<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


def verdict_markdown(numbers: dict | None) -> str:
    if not numbers or not numbers.get("verdict"):
        return ""
    verdict = numbers["verdict"]
    mark = {"frozen": "✅", "changed": "✅", "none": "⚠️", "control": "ℹ️"}.get(verdict["kind"], "")
    return f"{mark} **{verdict['sentence']}**" if verdict["kind"] != "none" else f"{mark} {verdict['sentence']}"


def motion_plot(flows: dict | None) -> matplotlib.figure.Figure | None:
    """Optical flow per frame of each video (a Figure, not pyplot: no global state across requests).
    Large text: the plot is shown at a third of its size on a phone."""
    if not flows:
        return None
    styles = {"original": ("original", "o-", 2.0), "guarded": ("guarded", "s--", 2.0), "control": ("control", "^:", 1.5)}
    with matplotlib.rc_context({"font.size": 15, "legend.fontsize": 14}):
        figure = matplotlib.figure.Figure(figsize=(5.0, 3.5), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        for key, (label, style, width) in styles.items():
            if flows.get(key):
                axes.plot(np.arange(1, len(flows[key]) + 1), flows[key], style, label=label, linewidth=width)
        axes.set_title("Motion per frame of each video")
        axes.set_xlabel("frame i -> i+1")
        axes.set_ylabel("flow (px)")
        axes.set_ylim(bottom=0)
        axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        figure.legend(loc="outside lower center", ncols=3, frameon=False)
    return figure


def settings_text(model, seed, method=None, eps=None, steps=None, robust=None, options=None) -> str:
    parts = [f"model **{model}**", f"seed **{seed}**"]
    if method is not None:
        parts += [f"method **{method}**", f"eps **{eps}/255**",
                  "steps **0** (a control: nothing optimised)" if method == "noise" else f"steps **{steps}**",
                  f"robust **{'on' if robust else 'off'}**"]
    if options:
        parts += [f"frames **{options['num_frames'] or 'default'}**",
                  f"video steps **{options['num_inference_steps'] or 'default'}**"]
        if "motion_bucket_id" in options:
            parts.append(f"motion bucket **{options['motion_bucket_id']}**")
    return "To redo this result, use the same settings: " + ", ".join(parts) + "."


def settings_dict(model, seed, method=None, eps=None, steps=None, robust=None, options=None) -> dict:
    settings = dict(model=model, seed=seed)
    if method is not None:
        settings.update(method=method, eps=eps, steps=0 if method == "noise" else steps, robust=bool(robust))
    if options:
        settings.update(frames=options["num_frames"] or 0, video_steps=options["num_inference_steps"] or 0)
        if "motion_bucket_id" in options:
            settings["motion_bucket"] = options["motion_bucket_id"]
    return settings


# -- ZeroGPU durations (same signatures as the entry points) ------------------------------------------------
def _cost(model: str) -> dict:
    cost = dict(GPU_COST.get(model, GPU_COST["embedded"]))
    if model in _targets:  # the loaded model knows its defaults better than the table
        cost.update(frames=_targets[model].num_frames, video_steps=_targets[model].num_inference_steps)
    return cost


def _clamp(value, high: int) -> int:
    """A count from a request, as an int in [0, high] (0 for anything that is not a number)."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0
    return int(min(max(number, 0), high)) if math.isfinite(number) else 0


def _seconds(model, method=None, steps=0, videos=0, frames=0, video_steps=0) -> int:
    """GPU seconds to reserve for a job; every count is clamped to its limit (a request cannot
    reserve more than the largest job the entry point would accept)."""
    c = _cost(str(model))
    # a protection step costs in proportion to the frames it attacks (the preset's, at most the model's)
    # (all of them while the model is not loaded yet, and always for CogVideoX)
    target = _targets.get(str(model))
    attack_frames = (settings_for(method, "fast", target)[1].get("frames") if target and method in PRESETS
                     else None) or c["frames"]
    pgd = _clamp(steps, MAX_STEPS) * c["pgd_step"] * min(attack_frames, c["frames"]) / c["frames"]
    frames = _clamp(frames, MAX_FRAMES) or c["frames"]
    video_steps = _clamp(video_steps, MAX_VIDEO_STEPS) or c["video_steps"]
    denoise = videos * video_steps * frames * c["denoise_frame_step"]
    return int(min(max(c["fixed"] + pgd + denoise, MIN_GPU_SECONDS), MAX_GPU_SECONDS))


def protect_seconds(image, method, eps, steps, model, seed, randomize_seed, robust, *_, **__):
    return _seconds(model, method, steps=steps if method != "noise" else 0)


def animate_seconds(image, model, seed, randomize_seed, frames, motion_bucket, video_steps, *_, **__):
    return _seconds(model, videos=1, frames=frames, video_steps=video_steps)


def protect_and_animate_seconds(image, method, eps, steps, model, seed, randomize_seed, frames, motion_bucket,
                                video_steps, robust, *_, **__):
    # the original, the guarded photo and the control (the noise method is its own control)
    return _seconds(model, method, steps=steps if method != "noise" else 0, videos=2 if method == "noise" else 3,
                    frames=frames, video_steps=video_steps)


def survive_posting_seconds(image, guarded, model, seed, frames, motion_bucket, video_steps, *_, **__):
    return _seconds(model, videos=3, frames=frames, video_steps=video_steps)


# -- checks made before a job is queued (Gradio validators) ---------------------------------------------------
#: the entry points that run a model; a visitor may have JOBS_PER_SESSION of them queued or running
MODEL_JOBS = ("protect_and_animate", "protect", "animate", "survive_posting")
CHECKS = {"method": check_method, "eps": lambda v: checked(limits.eps, v),
          "steps": lambda v: checked(limits.steps, v), "model": lambda v: get_target_name(v),
          "frames": lambda v: checked(limits.frames, v), "video_steps": lambda v: checked(limits.video_steps, v),
          "motion_bucket": lambda v: checked(limits.motion_bucket, v), "seed": lambda v: checked(limits.seed, v),
          "guarded": lambda v: check_guarded(v)}


def check_guarded(guarded) -> None:
    if not guarded:
        raise refusal("Protect the photo first: there is no guarded image to post.")


def get_target_name(model) -> str:
    if model not in AVAILABLE_MODELS:
        raise refusal(f"model must be one of {', '.join(AVAILABLE_MODELS)}, got {model!r}: it is not offered here.")
    return model


def client_address(request) -> str:
    """The client's address (the first X-Forwarded-For hop behind a proxy such as Spaces')."""
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
    return forwarded or (request.client.host if request.client else "")


def jobs_in_flight(request: gr.Request) -> tuple[int, int]:
    """(this session's, this address's) model jobs now queued or running, read from Gradio's queue."""
    events = list(getattr(getattr(demo, "_queue", None), "event_ids_to_events", {}).values())
    address, session, by_address = client_address(request), 0, 0
    for event in events:
        if getattr(event.fn, "api_name", None) not in MODEL_JOBS:
            continue
        session += event.session_hash == request.session_hash
        with contextlib.suppress(AttributeError):
            by_address += client_address(event.request) == address
    return session, by_address


def admission(request: gr.Request | None, **inputs) -> list[dict]:
    """What a validator returns: one gr.validate per input, in order. Refuses values out of bounds
    (naming the parameter) and a visitor who already has a job queued or running (on the image)."""
    results = {name: gr.validate(True, "") for name in inputs}
    for name, value in inputs.items():
        check = CHECKS.get(name)
        if check is None or (name == "seed" and inputs.get("randomize_seed")):  # a random seed is drawn
            continue
        try:
            check(value)
        except gr.Error as e:
            results[name] = gr.validate(False, e.message)
    if request is not None and "image" in inputs:
        session, by_address = jobs_in_flight(request)
        if session >= JOBS_PER_SESSION:
            results["image"] = gr.validate(False, "You already have a job queued or running: wait for its result "
                                                  "(one job at a time per visitor).")
        elif by_address >= JOBS_PER_ADDRESS:
            results["image"] = gr.validate(False, f"{by_address} jobs from your address are already queued or "
                                                  "running: wait for one of them to finish.")
    return list(results.values())


def admit_protect_and_animate(image, method, eps, steps, model, seed, randomize_seed, frames, motion_bucket,
                              video_steps, robust, state, request: gr.Request):
    return admission(request, image=image, method=method, eps=eps, steps=steps, model=model, seed=seed,
                     randomize_seed=randomize_seed, frames=frames, motion_bucket=motion_bucket,
                     video_steps=video_steps, robust=robust, state=state)


def admit_protect(image, method, eps, steps, model, seed, randomize_seed, robust, state, request: gr.Request):
    return admission(request, image=image, method=method, eps=eps, steps=steps, model=model, seed=seed,
                     randomize_seed=randomize_seed, robust=robust, state=state)


def admit_animate(image, model, seed, randomize_seed, frames, motion_bucket, video_steps, state,
                  request: gr.Request):
    return admission(request, image=image, model=model, seed=seed, randomize_seed=randomize_seed, frames=frames,
                     motion_bucket=motion_bucket, video_steps=video_steps, state=state)


def admit_survive_posting(image, guarded, model, seed, frames, motion_bucket, video_steps, state,
                          request: gr.Request):
    return admission(request, image=image, guarded=guarded, model=model, seed=seed, frames=frames,
                     motion_bucket=motion_bucket, video_steps=video_steps, state=state)


# -- entry points ---------------------------------------------------------------------------------------------
def _protect(image, method, eps, steps, model, seed, randomize_seed, robust, state, progress, deadline):
    target = get_target(model)
    check_method(method)
    eps = checked(limits.eps, eps)
    steps = checked(limits.steps, steps)
    seed = pick_seed(seed, randomize_seed)
    picture = open_upload(image, state)
    attack = make_method(method, target)
    config = PGDConfig(eps=eps / 255, steps=steps, robust=bool(robust), seed=protection_seed(seed))
    label = f"Protecting with {method}"
    progress((0, max(steps, 1)), desc=label)
    result = protect(target, picture, attack, config, callback=pgd_progress(progress, label, deadline))
    folder = request_dir()
    stem = safe_stem(image)
    guarded_png = gio.save_png(result.image, folder / f"{stem}_guarded.png")
    perturbation_png = gio.save_png(perturbation_view(result, eps),
                                    folder / f"{stem}_perturbation_x{127.5 / eps:.0f}.png")
    return result, folder, str(guarded_png), str(perturbation_png), seed, eps, steps


def _animate(target: Target, image, seed: int, options: dict, progress, label: str, deadline: float):
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    progress((0, options["num_inference_steps"] or target.num_inference_steps), desc=label)
    return target.generate(image, seed=seed, callback=denoise_progress(progress, label, deadline), **options).frames


@spaces.GPU(duration=protect_seconds)
def protect_image(image: str, method: str = "vidfreeze", eps: int = DEFAULT_EPS, steps: int = default_steps("vidfreeze"),
                  model: str = AVAILABLE_MODELS[0], seed: int = 0, randomize_seed: bool = False,
                  robust: bool = False, state: dict | None = None, progress=gr.Progress()):
    """Guard an image. Returns the guarded image (PNG), the same PNG as a file, the perturbation
    amplified, the numbers (table and JSON: the guarded photo and the noise control against the
    original), the seed used and the settings."""
    state = new_state(state)
    with visitor_errors():
        result, _, guarded, perturbation, seed, eps, steps = _protect(
            image, method, eps, steps, model, seed, randomize_seed, robust, state, progress, deadline_after())
        original = np.asarray(result.original)
        control = report.control_image(original, eps, seed) if method != "noise" else None
        numbers = report.measure(original, np.asarray(result.image), control, None, is_control=method == "noise")
        numbers["settings"] = settings_dict(model, seed, method, eps, steps, robust)
        return (guarded, guarded, perturbation, numbers_html(numbers), numbers, seed,
                settings_text(model, seed, method, eps, steps, robust), state)


@spaces.GPU(duration=animate_seconds)
def animate_image(image: str, model: str = AVAILABLE_MODELS[0], seed: int = 0, randomize_seed: bool = False,
                  frames: int = 0, motion_bucket: int = 127, video_steps: int = 0, state: dict | None = None,
                  progress=gr.Progress()):
    """Make a video from the image as it is (no protection). Returns the video, the seed used and the
    settings."""
    state = new_state(state)
    with visitor_errors():
        target = get_target(model)
        seed = pick_seed(seed, randomize_seed)
        options = video_options(target, frames, motion_bucket, video_steps)
        picture = open_upload(image, state)
        frames_ = _animate(target, picture, seed, options, progress, "Animating the image", deadline_after())
        path = gio.save_video(frames_, request_dir() / f"{safe_stem(image)}.mp4", fps=getattr(target, "fps", 8))
        return str(path), seed, settings_text(model, seed, options=options), state


@spaces.GPU(duration=protect_and_animate_seconds)
def protect_and_animate(image: str, method: str = "vidfreeze", eps: int = DEFAULT_EPS, steps: int = default_steps("vidfreeze"),
                        model: str = AVAILABLE_MODELS[0], seed: int = 0, randomize_seed: bool = False,
                        frames: int = 0, motion_bucket: int = 127, video_steps: int = 0, robust: bool = False,
                        state: dict | None = None, progress=gr.Progress()):
    """Guard an image, then make videos from the original, from the guarded image and from the control
    (the original plus random +-eps noise) with the same seed. Returns guarded image, PNG file,
    perturbation, both videos, the numbers (table), the verdict, the motion plot, the seed used, the
    settings and the numbers as JSON."""
    state = new_state(state)
    deadline = deadline_after()
    with visitor_errors():
        target = get_target(model)
        options = video_options(target, frames, motion_bucket, video_steps)
        result, folder, guarded, perturbation, seed, eps, steps = _protect(
            image, method, eps, steps, model, seed, randomize_seed, robust, state, progress, deadline)
        original = np.asarray(result.original)
        pictures = {"original": original, "guarded": np.asarray(result.image)}
        if method != "noise":  # the noise method is itself the control
            pictures["control"] = report.control_image(original, eps, seed)
        videos = {name: _animate(target, picture, seed, options, progress,
                                 f"Animating the {'noise control' if name == 'control' else name} image", deadline)
                  for name, picture in pictures.items()}
        stem, fps = safe_stem(image), getattr(target, "fps", 8)
        paths = {name: str(gio.save_video(videos[name], folder / f"{stem}_{name}.mp4", fps=fps))
                 for name in ("original", "guarded")}
        numbers = report.measure(original, pictures["guarded"], pictures.get("control"), videos, is_control=method == "noise")
        numbers["settings"] = settings_dict(model, seed, method, eps, steps, robust, options)
        return (guarded, guarded, perturbation, paths["original"], paths["guarded"], numbers_html(numbers),
                verdict_markdown(numbers), motion_plot(numbers["flows"]), seed,
                settings_text(model, seed, method, eps, steps, robust, options), numbers, state)


@spaces.GPU(duration=survive_posting_seconds)
def survive_posting(image: str, guarded: str, model: str = AVAILABLE_MODELS[0], seed: int = 0, frames: int = 0,
                    motion_bucket: int = 127, video_steps: int = 0, state: dict | None = None,
                    progress=gr.Progress()):
    """Does the protection survive posting? The original photo, the guarded PNG and the control (the
    original plus random noise of the guarded image's own L-inf budget) are each downsized to 0.75x
    and saved as JPEG at quality 75, as a platform serves a posted photo, and animated again with the
    same seed. Returns the posted guarded image, the videos of the posted original and the posted
    guarded image, the numbers (table), the verdict and the numbers as JSON."""
    state = new_state(state)
    deadline = deadline_after()
    with visitor_errors():
        target = get_target(model)
        seed = checked(limits.seed, seed)
        options = video_options(target, frames, motion_bucket, video_steps)
        check_guarded(guarded)
        picture = open_upload(image, state)
        original = np.asarray(picture)
        guarded_image, _ = gio.load_image(guarded)
        guarded_pixels = np.asarray(guarded_image)
        if guarded_pixels.shape != original.shape:
            raise refusal(f"The guarded image ({guarded_image.width}x{guarded_image.height}) was not made from this "
                          f"photo ({picture.width}x{picture.height}): protect the photo again.")
        eps = int(np.abs(guarded_pixels.astype(np.int16) - original).max())
        if not 0 < eps <= MAX_EPS:
            raise refusal("The guarded image was not made from this photo (it differs by "
                          f"{eps}/255): protect the photo again.")
        pictures = {"original": original, "guarded": guarded_pixels, "control": report.control_image(original, eps, seed)}
        posted = {name: report.posted(picture) for name, picture in pictures.items()}
        videos = {name: _animate(target, picture, seed, options, progress,
                                 f"Animating the posted {'noise control' if name == 'control' else name} image",
                                 deadline)
                  for name, picture in posted.items()}
        folder, stem, fps = request_dir(), safe_stem(image), getattr(target, "fps", 8)
        posted_png = gio.save_png(posted["guarded"], folder / f"{stem}_guarded_posted.png")
        paths = {name: str(gio.save_video(videos[name], folder / f"{stem}_{name}_posted.mp4", fps=fps))
                 for name in ("original", "guarded")}
        numbers = report.measure(posted["original"], posted["guarded"], posted["control"], videos, is_control=False,
                          prefix="After posting: ")
        numbers["settings"] = dict(settings_dict(model, seed, options=options), eps=eps,
                                   posting=dict(scale=report.POSTING_SCALE, jpeg_quality=report.POSTING_QUALITY))
        return (str(posted_png), paths["original"], paths["guarded"], numbers_html(numbers, posted=True),
                verdict_markdown(numbers), numbers, state)


# -- stored results of the examples (guard/example_cache.py, made by scripts/cache_examples.py) ----------------
def cache_fingerprint() -> str:
    model = DEFAULTS["model"]
    model_dir = MODELS.get(model)
    return example_cache.fingerprint(model, model_dir if model_dir and os.path.isdir(model_dir) else None, DEFAULTS)


EXAMPLE_CACHE = example_cache.load(cache_fingerprint())
if EXAMPLE_CACHE.entries and not EXAMPLE_CACHE.fresh:
    logger.warning("examples/cache was made with another model, other settings or other code: clicked examples "
                   "run live; run `python scripts/cache_examples.py` to store their results again")


def show_example(image: str | None, state: dict | None = None):
    """An example's stored result (guard/example_cache.py), shown at once, with the controls set to the
    settings it was made with. Without a stored result (a stale cache), only says so."""
    state = new_state(state)
    entry = EXAMPLE_CACHE.lookup(image)
    controls = [DEFAULTS[k] for k in ("method", "eps", "steps", "model", "seed", "randomize_seed", "frames",
                                      "video_steps", "motion_bucket", "robust")]
    if entry is None:
        note = ("No stored result for this example (the model or guard changed since it was stored): press "
                "**Protect & animate** to compute it.")
        return [None] * 5 + ["", note, None, None, "", None] + [gr.skip()] * len(controls) + [state]
    folder = request_dir()  # a copy: the repository's files are never handed out or changed
    files = {role: str(shutil.copyfile(path, folder / f"{Path(entry.name).stem}_{role}{path.suffix}"))
             for role, path in entry.files.items()}
    numbers = entry.numbers
    s = numbers["settings"]
    options = dict(num_frames=s.get("frames") or None, num_inference_steps=s.get("video_steps") or None)
    if "motion_bucket" in s:
        options["motion_bucket_id"] = s["motion_bucket"]
    settings = settings_text(s["model"], s["seed"], s["method"], s["eps"], s["steps"], s["robust"], options)
    return [files["guarded"], files["guarded"], files["perturbation"], files["video_original"],
            files["video_guarded"], numbers_html(numbers), verdict_markdown(numbers) + " *(stored result)*",
            motion_plot(numbers["flows"]), s["seed"], settings, numbers] + controls + [state]


# -- page -------------------------------------------------------------------------------------------------------
def example_credits() -> str:
    """One line per example image (what, source, licence), from the table in examples/SOURCES.md."""
    path = EXAMPLES_DIR / "SOURCES.md"
    if not path.is_file():
        return ""
    lines = []
    for row in path.read_text().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".png"):
            name, what, source, licence = cells
            lines.append(f"- **{name}**: {what}; {source}; *{licence}*")
    return "Example images:\n" + "\n".join(lines) if lines else ""


def model_note(model: str) -> str:
    return MODEL_NOTES.get(model, MODEL_NOTES["svd"])


EXAMPLES = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))
INTRO = """# guard: protect a photo from image-to-video models
guard adds a small, bounded change to a photo (at most *eps* levels out of 255 per pixel) meant to stop an
image-to-video model from animating it: the published methods aim for a **frozen** video (Vid-Freeze) or a
**ruined** one (I2VGuard). Whether they achieve it depends on the model, so every result ends with a
one-line **verdict** that compares the video of the guarded photo with the video of the original and with
the video of the photo plus random noise of the same budget (the control). Click an example to see a
stored result at once, or upload a photo and press **Protect & animate**."""
ABOUT = f"""
**Methods.** All four share one L-inf projected-gradient loop (`guard/optimize.py`): the guarded image
never differs from the original by more than *eps*/255 in any pixel channel, and is saved as an 8-bit PNG
of the photo's own size. The change is optimised through the resize the model's pipeline applies to a
photo of any size, and through a center crop to the model's aspect (`guard/resize.py`).
- **Vid-Freeze** (arXiv 2509.23279) pushes the model's temporal attention toward uniform over frames,
  meant to make every frame alike so that the video freezes.
- **I2VGuard** (Gui et al., CVPR 2025) pushes the image's latent, the denoised video and the temporal
  attention away from those of the clean video, meant to ruin the video.
- **PhotoGuard** (Salman et al., 2023) only attacks the VAE encoder: a cheap baseline made for image
  editing, not video.
- **Random noise** of the same budget is the control: a protection that does no better protects nothing.

**The verdict.** Three videos are made with the same seed and settings: from the original, from the
guarded photo, and from the control (the original with every pixel channel moved by +eps or -eps at
random, the whole budget). A protection is claimed only when the guarded photo's video moves at least
{report.FREEZE_MARGIN:.0%} less than the original's and {report.FREEZE_MARGIN * 100:.0f} points less than
the control's, or when its frames are at least {report.CHANGE_MARGIN_DB:.0f} dB PSNR further from the
original's than both the control's frames and the photo's own change; otherwise it says "no measurable
protection". One photo and one seed (smaller differences are within what seeds alone do):
`python -m guard evaluate` measures many.

**Numbers.** PSNR and SSIM compare the guarded image with the original, both at the photo's own size;
the largest pixel change is in 8-bit levels. Motion is the mean Farneback optical flow between
consecutive frames; a motion ratio below 1 means the video moves less than the original's. PSNR and SSIM
between two videos say how different they are (lower: more different). The methods run with the "fast"
preset of `guard/presets.py`.

**Does it survive posting?** The original, the guarded photo and the control are {report.POSTING}, as a
platform serves a posted photo, and animated again; the guarded one is compared with the posted original.
"""
FALLBACK_NOTE = ("**Note:** the embedded model is not installed here, so this page runs `tiny-svd`, a "
                 "random-weight model for tests: its videos are noise.")
CSS = """
.guard-out img { image-rendering: pixelated; object-fit: contain; }
.guard-out .image-container, .guard-out .image-frame { padding-top: 2.4rem; }
#guard-settings p { font-size: 0.9em; }
#example-credits { font-size: 0.8em; opacity: 0.85; }
#model-note p, #outputs-note p { font-size: 0.85em; opacity: 0.9; }
#verdict p, #posted-verdict p { font-size: 1.05em; }
.guard-numbers { width: 100%; border-collapse: collapse; font-size: 0.92em; margin: 0 !important; border: none !important; }
.guard-numbers caption { caption-side: bottom; text-align: left; font-size: 0.85em; opacity: 0.8; padding-top: 0.4em; }
.guard-numbers th, .guard-numbers td { padding: 0.3em 0.5em !important; border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important; text-align: left; vertical-align: top;
  word-break: normal; overflow-wrap: normal; hyphens: none; background: none !important; }
.guard-numbers thead, .guard-numbers tbody, .guard-numbers tr { border: none !important; background: none !important; }
.guard-numbers td { white-space: nowrap; font-variant-numeric: tabular-nums; }
.guard-numbers thead th { font-weight: 600; }
.guard-numbers tbody th { font-weight: 500; width: 55%; }
.guard-numbers tbody th small { display: block; font-weight: 400; opacity: 0.7; }
@media (max-width: 480px) { .guard-numbers { font-size: 0.85em; } .guard-numbers tbody th { width: auto; } }
#model input { padding-right: 2.2em; text-overflow: ellipsis; }
"""
#: what `launch()` needs besides host and port (Gradio 6 takes css there); tests launch with these too
LAUNCH_OPTIONS = dict(max_file_size=MAX_FILE_SIZE, css=CSS)
#: the queue: QUEUE_SIZE jobs waiting in all (per-visitor limits: the validators above)
QUEUE_OPTIONS = dict(max_size=QUEUE_SIZE)

with gr.Blocks(title="guard", delete_cache=(1800, 3600)) as demo:
    gr.Markdown(INTRO)
    if AVAILABLE_MODELS == ["tiny-svd"] and not os.environ.get("GUARD_MODELS"):
        gr.Markdown(FALLBACK_NOTE)
    with gr.Accordion("About the methods, the verdict and the numbers", open=False):
        gr.Markdown(ABOUT)
    session = gr.State(None)  # per visitor: the notices already shown
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            image_in = UploadedImage(label="Photo to protect", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                height=300, elem_id="input-image")
            examples = gr.Examples(examples=[[p] for p in EXAMPLES], inputs=[image_in], label="Examples (stored results)")
            gr.Markdown(example_credits(), elem_id="example-credits")
            method_in = NamedRadio([(label, key) for key, label in METHOD_LABELS.items() if key in METHODS],
                                 value=DEFAULTS["method"], label="Method")
            eps_in = NamedSlider(1, MAX_EPS, value=DEFAULT_EPS, step=1, label="Epsilon (x/255)", elem_id="eps",
                                 info="the largest change of any pixel, in 8-bit levels")
            steps_in = NamedSlider(0, MAX_STEPS, value=DEFAULTS["steps"], step=1, label="Steps", elem_id="steps",
                                   info="optimisation steps (more: stronger, slower; ignored by the noise control)")
            model_in = NamedDropdown([(MODEL_LABELS.get(m, m), m) for m in AVAILABLE_MODELS],
                                   value=AVAILABLE_MODELS[0], label="Image-to-video model", elem_id="model")
            model_note_out = gr.Markdown(model_note(AVAILABLE_MODELS[0]), elem_id="model-note")
            with gr.Accordion("Advanced options", open=False, elem_id="advanced"):
                with gr.Row():
                    seed_in = NamedNumber(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    randomize_in = gr.Checkbox(value=False, label="Random seed")
                frames_in = NamedSlider(0, MAX_FRAMES, value=0, step=1, label="Frames (0 = the model's default)")
                video_steps_in = NamedSlider(0, MAX_VIDEO_STEPS, value=0, step=1, elem_id="video-steps",
                                             label="Video denoising steps (0 = the model's default)")
                bucket_in = NamedSlider(0, limits.MAX_MOTION_BUCKET, value=127, step=1,
                                        label="Motion bucket (SVD family: more = more motion)")
                robust_in = gr.Checkbox(value=False, label="Robust mode",
                                        info="optimise through random JPEG / resize / crop (slower)")
            with gr.Row():
                run_btn = gr.Button("Protect & animate", variant="primary", elem_id="run")
                protect_btn = gr.Button("Protect only", elem_id="protect-only")
                animate_btn = gr.Button("Animate the photo", elem_id="animate-only")
        with gr.Column(scale=3, min_width=320):
            with gr.Row(equal_height=True):
                guarded_out = UploadedImage(label="Guarded image", format="png", type="filepath", interactive=False,
                                            height=280, buttons=["download", "fullscreen"], elem_classes="guard-out",
                                            elem_id="guarded-image", min_width=150)
                perturbation_out = gr.Image(label="Change, amplified", format="png",
                                            type="filepath", interactive=False, height=280, buttons=["fullscreen"],
                                            elem_classes="guard-out", elem_id="perturbation", min_width=150)
            gr.Markdown("The guarded PNG has the photo's own size. Change, amplified: gray = unchanged, black / "
                        f"white = -eps / +eps; a photo over {DISPLAY_SIDE} px is shown whole (every n-th pixel) with "
                        "its centre (red frame) beside it at 100%: open it full screen to see the change at real "
                        "size. Both videos are made from the photos at their own size, resized by the model's "
                        "pipeline as an animator's would, with the same seed and settings.", elem_id="outputs-note")
            guarded_file = gr.File(label="Download the guarded image (lossless PNG)",
                                   interactive=False, elem_id="guarded-file")
            with gr.Row(equal_height=True):
                video_original = gr.Video(label="Video: original", autoplay=True, loop=True, height=280,
                                          interactive=False, elem_id="video-original", min_width=150)
                video_guarded = gr.Video(label="Video: guarded", autoplay=True,
                                         loop=True, height=280, interactive=False, elem_id="video-guarded",
                                         min_width=150)
            numbers_out = gr.HTML(label="Measured", show_label=True, container=True, elem_id="numbers")
            verdict_out = gr.Markdown(label="Verdict", elem_id="verdict")
            plot_out = gr.Plot(label="Motion per frame", show_label=False, elem_id="motion-plot")
            with gr.Row(equal_height=True):
                seed_out = NamedNumber(0, label="Seed used", precision=0, interactive=False, scale=1, min_width=120)
                settings_out = gr.Markdown(label="Settings", elem_id="guard-settings")
            with gr.Accordion("The numbers as JSON", open=False):
                numbers_json = gr.JSON(label="Numbers", elem_id="numbers-json")
            with gr.Column(elem_id="posting-section"):
                gr.Markdown(f"### Does it survive posting?\nThe original, the guarded image and the control, each "
                            f"{report.POSTING} as a platform would, animated again with the same seed.")
                posting_btn = gr.Button("Post it and animate again", elem_id="posting")
                with gr.Row(equal_height=True):
                    posted_video_original = gr.Video(label="Posted: original", autoplay=True, loop=True,
                                                     height=240, interactive=False, elem_id="posted-video-original",
                                                     min_width=150)
                    posted_video_guarded = gr.Video(label="Posted: guarded", autoplay=True, loop=True,
                                                    height=240, interactive=False, elem_id="posted-video-guarded",
                                                    min_width=150)
                posted_out = gr.Image(label="Guarded image, posted", format="png", type="filepath", interactive=False,
                                      height=180, buttons=["fullscreen"], elem_classes="guard-out",
                                      elem_id="posted-image")
                posted_numbers = gr.HTML(label="Measured after posting", show_label=True, container=True,
                                         elem_id="posted-numbers")
                posted_verdict = gr.Markdown(label="Verdict after posting", elem_id="posted-verdict")
                with gr.Accordion("The numbers after posting as JSON", open=False):
                    posted_json = gr.JSON(label="Numbers after posting")

    # each method starts from its own preset's steps (PhotoGuard's steps are cheap, the control has none)
    method_in.change(lambda m: gr.update(value=default_steps(m)), inputs=method_in, outputs=steps_in, queue=False,
                     api_visibility="private")
    model_in.change(model_note, inputs=model_in, outputs=model_note_out, queue=False, api_visibility="private")
    image_args = [image_in, method_in, eps_in, steps_in, model_in, seed_in, randomize_in]
    video_args = [frames_in, bucket_in, video_steps_in]
    # one model job at a time per loaded model; per visitor: the validators (admit_*)
    common = dict(concurrency_id="model", concurrency_limit=1)
    posted_outputs = [posted_out, posted_video_original, posted_video_guarded, posted_numbers, posted_verdict,
                      posted_json]

    def clear(*components):
        """An event that empties the outputs the next step will not refill (no stale results)."""
        return dict(fn=lambda: [None] * len(components), outputs=list(components), queue=False,
                    api_visibility="private")

    run_btn.click(**clear(guarded_out, guarded_file, perturbation_out, video_original, video_guarded, numbers_out,
                          verdict_out, plot_out, numbers_json, *posted_outputs)).then(
        protect_and_animate, inputs=image_args + video_args + [robust_in, session],
        outputs=[guarded_out, guarded_file, perturbation_out, video_original, video_guarded, numbers_out,
                 verdict_out, plot_out, seed_out, settings_out, numbers_json, session],
        api_name="protect_and_animate", show_progress_on=[guarded_out, video_original, video_guarded],
        validator=admit_protect_and_animate, **common)
    protect_btn.click(**clear(video_original, video_guarded, plot_out, verdict_out, *posted_outputs)).then(
        protect_image, inputs=image_args + [robust_in, session],
        outputs=[guarded_out, guarded_file, perturbation_out, numbers_out, numbers_json, seed_out, settings_out,
                 session],
        api_name="protect", show_progress_on=[guarded_out], validator=admit_protect, **common)
    animate_btn.click(**clear(guarded_out, guarded_file, perturbation_out, video_guarded, numbers_out, verdict_out,
                              plot_out, numbers_json, *posted_outputs)).then(
        animate_image, inputs=[image_in, model_in, seed_in, randomize_in] + video_args + [session],
        outputs=[video_original, seed_out, settings_out, session], api_name="animate",
        show_progress_on=[video_original], validator=admit_animate, **common)
    posting_btn.click(**clear(*posted_outputs)).then(
        survive_posting, inputs=[image_in, guarded_out, model_in, seed_out] + video_args + [session],
        outputs=posted_outputs + [session], api_name="survive_posting",
        show_progress_on=[posted_out, posted_video_guarded], validator=admit_survive_posting, **common)
    # an example shows its stored result at once (not queued behind model jobs) and the settings it used
    examples.load_input_event.then(
        show_example, inputs=[image_in, session],
        outputs=[guarded_out, guarded_file, perturbation_out, video_original, video_guarded, numbers_out,
                 verdict_out, plot_out, seed_out, settings_out, numbers_json, method_in, eps_in, steps_in, model_in,
                 seed_in, randomize_in, frames_in, video_steps_in, bucket_in, robust_in, session],
        api_name="show_example", api_visibility="undocumented", queue=False).then(
        **clear(*posted_outputs))

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    demo.queue(**QUEUE_OPTIONS).launch(**LAUNCH_OPTIONS)
