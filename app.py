"""guard's Space: protect a photo, then watch what an image-to-video model makes of it.

UI and wiring only: layout, events and the `@spaces.GPU` entry points. The protection, the models,
the measurements and the image/video files live in `guard/` (shared with the CLI and the tests).

Endpoints (also for `gradio_client`): "/protect", "/animate", "/protect_and_animate"; their
parameters are named after the controls (image, method, eps, steps, model, seed, ...).
"""

import spaces  # noqa: I001  first: on ZeroGPU it must patch torch before anything initialises CUDA

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import matplotlib.figure
import matplotlib.ticker
import numpy as np
import PIL.Image
import torch

from guard import io as gio
from guard import metrics
from guard.methods import METHODS, get_method
from guard.optimize import PGDConfig, Protection, protect
from guard.presets import PRESETS, settings_for
from guard.targets import DEFAULT_MODEL, EMBEDDED_PATH, MODELS, Target, load_target

logger = logging.getLogger("guard.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# -- limits, checked on the server (the sliders only suggest them) ------------------------------------
MAX_EPS = int(os.environ.get("GUARD_MAX_EPS", "32"))  # L-inf budget, in 8-bit levels (x/255)
DEFAULT_EPS = 8
MAX_STEPS = int(os.environ.get("GUARD_MAX_STEPS", "200"))  # PGD steps
# default steps: the "fast" preset's per method (guard/presets.py), or GUARD_DEFAULT_STEPS for all
DEFAULT_STEPS_OVERRIDE = os.environ.get("GUARD_DEFAULT_STEPS")
MAX_FRAMES = int(os.environ.get("GUARD_MAX_FRAMES", "49"))  # 0 in the UI = the model's default
MAX_VIDEO_STEPS = int(os.environ.get("GUARD_MAX_VIDEO_STEPS", "50"))  # denoising steps, 0 = model's default
MAX_SEED = 2**31 - 1
MAX_SIDE = int(os.environ.get("GUARD_MAX_SIDE", "4096"))  # larger uploads are shrunk first (with a notice)
MAX_FILE_SIZE = os.environ.get("GUARD_MAX_FILE_SIZE", "25mb")  # uploads above this are refused by Gradio
REQUEST_DIR_MAX_AGE_S = 3600  # per-request folders older than this are removed

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
# I2VGuard's setup (its clean video: 3.5-3.9 s) and the decode. SVD (14 frames) is scaled from SVD-XT;
# the embedded model is a CPU model. A ZeroGPU half card is slower than an H100: keep the margin.
GPU_COST = {
    "embedded": dict(fixed=5.0, pgd_step=0.10, denoise_frame_step=0.004, frames=8, video_steps=12),
    "svd": dict(fixed=10.0, pgd_step=1.0, denoise_frame_step=0.04, frames=14, video_steps=25),
    "svd-xt": dict(fixed=10.0, pgd_step=1.75, denoise_frame_step=0.04, frames=25, video_steps=25),
    "cogvideox": dict(fixed=25.0, pgd_step=6.0, denoise_frame_step=0.05, frames=49, video_steps=50),
    "tiny-svd": dict(fixed=2.0, pgd_step=0.05, denoise_frame_step=0.01, frames=4, video_steps=3),
    "tiny-cogvideox": dict(fixed=2.0, pgd_step=0.05, denoise_frame_step=0.01, frames=9, video_steps=3),
}
MIN_GPU_SECONDS, MAX_GPU_SECONDS = 10, 600

# -- models offered ---------------------------------------------------------------------------------------
MODEL_LABELS = {
    "embedded": "embedded (small SVD-family model shipped with guard)",
    "svd": "Stable Video Diffusion (14 frames, GPU)",
    "svd-xt": "Stable Video Diffusion XT (25 frames, GPU)",
    "cogvideox": "CogVideoX-5B I2V (49 frames, GPU)",
    "tiny-svd": "tiny-svd (random weights: for tests, its videos are noise)",
    "tiny-cogvideox": "tiny-cogvideox (random weights: for tests)",
}
METHOD_LABELS = {
    "vidfreeze": "Vid-Freeze (suppress temporal attention: frozen video)",
    "i2vguard": "I2VGuard (encoder + diffusion + attention: ruined video)",
    "photoguard": "PhotoGuard (encoder attack, image-editing baseline)",
    "noise": "Random noise of the same budget (control)",
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


def get_target(model: str) -> Target:
    """The loaded target of a listed model; loaded once per process, then reused."""
    if model not in AVAILABLE_MODELS:  # a name a visitor typed is never loaded
        raise gr.Error(f"The model {model!r} is not offered here; choose one of: {', '.join(AVAILABLE_MODELS)}.")
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


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high], or a gr.Error naming the control and the allowed range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number from {low} to {high}, got {value!r}.") from None
    if not number.is_integer() or not low <= number <= high:
        raise gr.Error(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    return int(number)


@contextlib.contextmanager
def visitor_errors():
    """Turns what can go wrong into one sentence on the page (never a traceback)."""
    try:
        yield
    except gr.Error:
        raise
    except gio.InputError as e:
        raise gr.Error(str(e)) from None
    except ValueError as e:  # a setting the model refuses (e.g. a frame count CogVideoX cannot make)
        raise gr.Error(f"These settings cannot be used: {e}") from None
    except torch.OutOfMemoryError:
        raise gr.Error("The model ran out of memory: try fewer frames or fewer steps.") from None
    except Exception:
        logger.exception("unexpected failure")
        raise gr.Error("Something went wrong on our side; please try again, or with other settings.") from None


def open_upload(image: str | None, target: Target) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """(upload as 8-bit RGB, upload at the model's working resolution); notices go to the page."""
    if not image:
        raise gr.Error("Upload an image first (or click one of the examples).")
    picture, notices = gio.load_image(image)
    for notice in notices:
        gr.Warning(notice)
    if max(picture.size) > MAX_SIDE:
        w, h = picture.size
        picture = picture.copy()
        picture.thumbnail((MAX_SIDE, MAX_SIDE), PIL.Image.Resampling.LANCZOS)
        gr.Info(f"The image ({w}x{h}) was shrunk to {picture.width}x{picture.height} first.")
    prepared = target.prepare_image(picture)
    if prepared.size != picture.size:
        gr.Info(f"The image was center-cropped and resized from {picture.width}x{picture.height} to "
                f"{prepared.width}x{prepared.height}, the working size of {target.name}: the guarded PNG has this size.")
    return picture, prepared


def pick_seed(seed, randomize_seed: bool) -> int:
    if randomize_seed:
        return secrets.randbelow(MAX_SEED + 1)
    return whole_number("Seed", seed, 0, MAX_SEED)


def video_options(target: Target, frames, motion_bucket, video_steps) -> dict:
    """Keyword arguments of `Target.generate` from the advanced controls (0 = the model's default)."""
    options = dict(num_frames=whole_number("Frames", frames, 0, MAX_FRAMES) or None,
                   num_inference_steps=whole_number("Video steps", video_steps, 0, MAX_VIDEO_STEPS) or None)
    bucket = whole_number("Motion bucket", motion_bucket, 0, 255)
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


def make_method(method: str, target: Target):
    """The method object with the "fast" preset's parameters (as the CLI's default)."""
    if method not in METHODS:
        raise gr.Error(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}.")
    _, params = settings_for(method, "fast", target)
    return get_method(method, **params)


def protection_seed(seed: int) -> int:
    """The protection's own seed for a visitor's seed: above every seed a video can have (0..MAX_SEED),
    so that a protection never sees the seed of the videos it is shown against (I2VGuard's clean video
    and every noise draw come from this seed)."""
    return MAX_SEED + 1 + seed


def amplified(protection: Protection, eps_levels: int) -> np.ndarray:
    """The perturbation made visible: -eps..+eps levels mapped to black..white, 0 to mid-gray."""
    delta = protection.perturbation().astype(np.float32)  # (H, W, 3), 8-bit levels
    return np.clip(127.5 + delta * (127.5 / max(eps_levels, 1)), 0, 255).round().astype(np.uint8)


def pgd_progress(progress, label: str):
    """protect's callback(step, total, terms) -> the page's progress bar."""
    def callback(step, total, terms):
        progress((step, total), desc=f"{label}: step {step}/{total}, loss {terms.get('loss', float('nan')):.4g}")
    return callback


def denoise_progress(progress, label: str):
    """generate's callback(step, total) -> the page's progress bar."""
    def callback(step, total):
        progress((step, total), desc=f"{label}: denoising step {step}/{total}")
    return callback


def numbers_table(image_numbers: dict | None, video_numbers: dict | None) -> list[list[str]]:
    rows = []
    if image_numbers:
        rows += [
            ["PSNR guarded vs original", f"{image_numbers['psnr']:.2f} dB", "higher = less visible"],
            ["SSIM guarded vs original", f"{image_numbers['ssim']:.4f}", "1 = identical"],
            ["L-inf of the change", f"{image_numbers['linf']}/255", "largest change of a pixel (<= eps)"],
        ]
    if video_numbers:
        v = video_numbers
        rows += [
            ["motion, video of the original", f"{v['flow_original']:.3f} px/frame", "mean optical flow"],
            ["motion, video of the guarded", f"{v['flow_guarded']:.3f} px/frame", "mean optical flow"],
            ["motion ratio guarded / original", f"{v['flow_ratio']:.3f}", "< 1: guarded moves less (frozen)"],
            ["frame change guarded / original", f"{v['change_ratio']:.3f}", "ratio of mean 1 - SSIM of frames"],
            ["PSNR between the two videos", f"{v['disruption_psnr']:.2f} dB", "lower = more different (ruined)"],
            ["SSIM between the two videos", f"{v['disruption_ssim']:.4f}", "lower = more different"],
        ]
    return rows


def motion_plot(original: np.ndarray, guarded: np.ndarray) -> matplotlib.figure.Figure:
    """Optical flow per frame of both videos (a Figure, not pyplot: no global state across requests)."""
    figure = matplotlib.figure.Figure(figsize=(6.4, 2.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for video, label, style in ((original, "from the original", "o-"), (guarded, "from the guarded", "s--")):
        flow = metrics.flow_per_frame(video)
        axes.plot(np.arange(1, len(flow) + 1), flow, style, label=label)
    axes.set_xlabel("frame transition (i -> i+1)")
    axes.set_ylabel("mean optical flow (px)")
    axes.set_title("Motion per frame")
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend()
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


# -- ZeroGPU durations (same signatures as the entry points) ------------------------------------------------
def _cost(model: str) -> dict:
    cost = dict(GPU_COST.get(model, GPU_COST["embedded"]))
    if model in _targets:  # the loaded model knows its defaults better than the table
        cost.update(frames=_targets[model].num_frames, video_steps=_targets[model].num_inference_steps)
    return cost


def _seconds(model, method=None, steps=0, videos=0, frames=0, video_steps=0) -> int:
    try:
        c = _cost(str(model))
        # a protection step costs in proportion to the frames it attacks (the preset's, at most the model's;
        # all of them while the model is not loaded yet, and always for CogVideoX)
        target = _targets.get(str(model))
        attack_frames = (settings_for(method, "fast", target)[1].get("frames") if target and method in PRESETS
                         else None) or c["frames"]
        pgd = min(max(int(steps or 0), 0), MAX_STEPS) * c["pgd_step"] * min(attack_frames, c["frames"]) / c["frames"]
        frames = int(frames or 0) or c["frames"]
        denoise = videos * (int(video_steps or 0) or c["video_steps"]) * frames * c["denoise_frame_step"]
        return int(min(max(c["fixed"] + pgd + denoise, MIN_GPU_SECONDS), MAX_GPU_SECONDS))
    except (TypeError, ValueError):  # bad input: the entry point will refuse it quickly
        return MIN_GPU_SECONDS


def protect_seconds(image, method, eps, steps, model, seed, randomize_seed, robust, *_, **__):
    return _seconds(model, method, steps=steps if method != "noise" else 0)


def animate_seconds(image, model, seed, randomize_seed, frames, motion_bucket, video_steps, *_, **__):
    return _seconds(model, videos=1, frames=frames, video_steps=video_steps)


def protect_and_animate_seconds(image, method, eps, steps, model, seed, randomize_seed, frames, motion_bucket,
                                video_steps, robust, *_, **__):
    return _seconds(model, method, steps=steps if method != "noise" else 0, videos=2, frames=frames,
                    video_steps=video_steps)


# -- entry points ---------------------------------------------------------------------------------------------
def _protect(image, method, eps, steps, model, seed, randomize_seed, robust, progress):
    target = get_target(model)
    eps = whole_number("Epsilon", eps, 1, MAX_EPS)
    steps = whole_number("Steps", steps, 0, MAX_STEPS)
    seed = pick_seed(seed, randomize_seed)
    _, prepared = open_upload(image, target)
    attack = make_method(method, target)
    config = PGDConfig(eps=eps / 255, steps=steps, robust=bool(robust), seed=protection_seed(seed))
    label = f"Protecting with {method}"
    progress((0, max(steps, 1)), desc=label)
    result = protect(target, prepared, attack, config, callback=pgd_progress(progress, label))
    folder = request_dir()
    stem = safe_stem(image)
    guarded_png = gio.save_png(result.image, folder / f"{stem}_guarded.png")
    perturbation_png = gio.save_png(amplified(result, eps), folder / f"{stem}_perturbation_x{127.5 / eps:.0f}.png")
    image_numbers = metrics.imperceptibility(np.asarray(result.original), np.asarray(result.image))
    return result, folder, str(guarded_png), str(perturbation_png), image_numbers, seed, eps, steps


def _animate(target: Target, image: PIL.Image.Image, seed: int, options: dict, progress, label: str):
    progress((0, options["num_inference_steps"] or target.num_inference_steps), desc=label)
    return target.generate(image, seed=seed, callback=denoise_progress(progress, label), **options)


@spaces.GPU(duration=protect_seconds)
def protect_image(image: str, method: str = "vidfreeze", eps: int = DEFAULT_EPS, steps: int = default_steps("vidfreeze"),
                  model: str = AVAILABLE_MODELS[0], seed: int = 0, randomize_seed: bool = False,
                  robust: bool = False, progress=gr.Progress()):
    """Guard an image. Returns the guarded image (PNG), the same PNG as a file, the perturbation
    amplified, a table of imperceptibility numbers, the seed used and the settings."""
    with visitor_errors():
        _, _, guarded, perturbation, numbers, seed, eps, steps = _protect(
            image, method, eps, steps, model, seed, randomize_seed, robust, progress)
        table = numbers_table(numbers, None)
        return (guarded, guarded, perturbation, table, seed,
                settings_text(model, seed, method, eps, steps, robust))


@spaces.GPU(duration=animate_seconds)
def animate_image(image: str, model: str = AVAILABLE_MODELS[0], seed: int = 0, randomize_seed: bool = False,
                  frames: int = 0, motion_bucket: int = 127, video_steps: int = 0, progress=gr.Progress()):
    """Make a video from the image as it is (no protection). Returns the video, the seed used and the
    settings."""
    with visitor_errors():
        target = get_target(model)
        seed = pick_seed(seed, randomize_seed)
        options = video_options(target, frames, motion_bucket, video_steps)
        _, prepared = open_upload(image, target)
        video = _animate(target, prepared, seed, options, progress, "Animating the image")
        path = gio.save_video(video.frames, request_dir() / f"{safe_stem(image)}.mp4", fps=getattr(target, "fps", 8))
        return str(path), seed, settings_text(model, seed, options=options)


@spaces.GPU(duration=protect_and_animate_seconds)
def protect_and_animate(image: str, method: str = "vidfreeze", eps: int = DEFAULT_EPS, steps: int = default_steps("vidfreeze"),
                        model: str = AVAILABLE_MODELS[0], seed: int = 0, randomize_seed: bool = False,
                        frames: int = 0, motion_bucket: int = 127, video_steps: int = 0, robust: bool = False,
                        progress=gr.Progress()):
    """Guard an image, then make a video from the original and one from the guarded image with the
    same seed. Returns guarded image, PNG file, perturbation, both videos, numbers, motion plot, seed
    used and settings."""
    with visitor_errors():
        target = get_target(model)
        options = video_options(target, frames, motion_bucket, video_steps)
        result, folder, guarded, perturbation, numbers, seed, eps, steps = _protect(
            image, method, eps, steps, model, seed, randomize_seed, robust, progress)
        fps = getattr(target, "fps", 8)
        videos = {}
        for name, picture in (("original", result.original), ("guarded", result.image)):
            video = _animate(target, picture, seed, options, progress, f"Animating the {name} image")
            videos[name] = video.frames
        stem = safe_stem(image)
        paths = {name: str(gio.save_video(frames_, folder / f"{stem}_{name}.mp4", fps=fps))
                 for name, frames_ in videos.items()}
        comparison = metrics.compare_videos(videos["original"], videos["guarded"])
        return (guarded, guarded, perturbation, paths["original"], paths["guarded"],
                numbers_table(numbers, comparison), motion_plot(videos["original"], videos["guarded"]), seed,
                settings_text(model, seed, method, eps, steps, robust, options))


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


EXAMPLES = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))
INTRO = """# guard: protect a photo from image-to-video models
guard adds a small, bounded change to a photo (at most *eps* levels out of 255 per pixel) so that an
image-to-video model makes a **frozen** (Vid-Freeze) or **ruined** (I2VGuard) video from it. Upload a
photo, choose a method and press **Protect & animate**: you get the guarded image (a lossless PNG), the
change amplified so you can see it, and the videos the model makes from the original and from the
guarded photo with the same seed, with numbers."""
ABOUT = """
**Methods.** All four share one L-inf projected-gradient loop (`guard/optimize.py`): the guarded image
never differs from the original by more than *eps*/255 in any pixel channel, and is saved as an 8-bit PNG.
- **Vid-Freeze** (arXiv 2509.23279) makes the model's temporal attention uniform over frames, so that
  every frame receives the same mixture and the video freezes.
- **I2VGuard** (Gui et al., CVPR 2025) pushes the image's latent, the denoised video and the temporal
  attention away from those of the clean video, so that the video is ruined.
- **PhotoGuard** (Salman et al., 2023) only attacks the VAE encoder: a cheap baseline made for image
  editing, not video.
- **Random noise** of the same budget is the control: a protection that does no better protects nothing.

**Numbers.** PSNR and SSIM compare the guarded image with the original (at the model's working size);
L-inf is the largest change in 8-bit levels. Motion is the mean Farneback optical flow between
consecutive frames; a motion ratio below 1 means the guarded photo's video moves less (frozen). PSNR and
SSIM between the two videos say how different they are (lower: ruined). Both videos use the same seed,
so any difference comes from the perturbation. The methods run with the "fast" preset of
`guard/presets.py`; the README has the evaluation on more images and models.
"""
FALLBACK_NOTE = ("**Note:** the embedded model is not installed here, so this page runs `tiny-svd`, a "
                 "random-weight model for tests: its videos are noise.")
CSS = """
.guard-out img { image-rendering: pixelated; object-fit: contain; }
#guard-settings p { font-size: 0.9em; }
#example-credits { font-size: 0.8em; opacity: 0.85; }
"""
#: what `launch()` needs besides host and port (Gradio 6 takes css there); tests launch with these too
LAUNCH_OPTIONS = dict(max_file_size=MAX_FILE_SIZE, css=CSS)

with gr.Blocks(title="guard", delete_cache=(1800, 3600)) as demo:
    gr.Markdown(INTRO)
    if AVAILABLE_MODELS == ["tiny-svd"] and not os.environ.get("GUARD_MODELS"):
        gr.Markdown(FALLBACK_NOTE)
    with gr.Accordion("About the methods and the numbers", open=False):
        gr.Markdown(ABOUT)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            image_in = UploadedImage(label="Photo to protect", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                height=300, elem_id="input-image")
            gr.Examples(examples=[[p] for p in EXAMPLES], inputs=[image_in], label="Examples")
            gr.Markdown(example_credits(), elem_id="example-credits")
            method_in = gr.Radio([(label, key) for key, label in METHOD_LABELS.items() if key in METHODS],
                                 value="vidfreeze", label="Method")
            eps_in = gr.Slider(1, MAX_EPS, value=DEFAULT_EPS, step=1, label="Epsilon (x/255)", elem_id="eps",
                               info="the largest change of any pixel, in 8-bit levels")
            steps_in = gr.Slider(0, MAX_STEPS, value=default_steps("vidfreeze"), step=1, label="Steps", elem_id="steps",
                                 info="optimisation steps (more: stronger, slower; ignored by the noise control)")
            model_in = gr.Dropdown([(MODEL_LABELS.get(m, m), m) for m in AVAILABLE_MODELS],
                                   value=AVAILABLE_MODELS[0], label="Image-to-video model")
            with gr.Accordion("Advanced options", open=False, elem_id="advanced"):
                with gr.Row():
                    seed_in = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    randomize_in = gr.Checkbox(value=False, label="Random seed")
                frames_in = gr.Slider(0, MAX_FRAMES, value=0, step=1, label="Frames (0 = the model's default)")
                video_steps_in = gr.Slider(0, MAX_VIDEO_STEPS, value=0, step=1, elem_id="video-steps",
                                           label="Video denoising steps (0 = the model's default)")
                bucket_in = gr.Slider(0, 255, value=127, step=1, label="Motion bucket (SVD family: more = more motion)")
                robust_in = gr.Checkbox(value=False, label="Robust mode",
                                        info="optimise through random JPEG / resize / crop (slower)")
            with gr.Row():
                run_btn = gr.Button("Protect & animate", variant="primary", elem_id="run")
                protect_btn = gr.Button("Protect only", elem_id="protect-only")
                animate_btn = gr.Button("Animate the photo", elem_id="animate-only")
        with gr.Column(scale=3, min_width=420):
            with gr.Row(equal_height=True):
                guarded_out = gr.Image(label="Guarded image", format="png", type="filepath", interactive=False,
                                       height=280, buttons=["download", "fullscreen"], elem_classes="guard-out",
                                       elem_id="guarded-image")
                perturbation_out = gr.Image(label="Change, amplified (gray = unchanged)", format="png",
                                            type="filepath", interactive=False, height=280,
                                            elem_classes="guard-out", elem_id="perturbation")
            guarded_file = gr.File(label="Download the guarded image (lossless PNG, exactly as computed)",
                                   interactive=False, elem_id="guarded-file")
            with gr.Row(equal_height=True):
                video_original = gr.Video(label="Video from the original", autoplay=True, loop=True, height=280,
                                          interactive=False, elem_id="video-original")
                video_guarded = gr.Video(label="Video from the guarded image (same seed)", autoplay=True,
                                         loop=True, height=280, interactive=False, elem_id="video-guarded")
            numbers_out = gr.Dataframe(headers=["measure", "value", "meaning"], label="Measured",
                                       interactive=False, wrap=True, column_widths=["38%", "22%", "40%"],
                                       elem_id="numbers")
            plot_out = gr.Plot(label="Motion per frame", elem_id="motion-plot")
            with gr.Row(equal_height=True):
                seed_out = gr.Number(label="Seed used", precision=0, interactive=False, scale=1, min_width=120)
                settings_out = gr.Markdown(elem_id="guard-settings")

    # each method starts from its own preset's steps (PhotoGuard's steps are cheap, the control has none)
    method_in.change(lambda m: gr.update(value=default_steps(m)), inputs=method_in, outputs=steps_in, queue=False,
                     api_visibility="private")
    image_args = [image_in, method_in, eps_in, steps_in, model_in, seed_in, randomize_in]
    common = dict(concurrency_id="model", concurrency_limit=1)  # one job per loaded model at a time
    def clear(*components):
        """An event that empties the outputs the next step will not refill (no stale results)."""
        return dict(fn=lambda: [None] * len(components), outputs=list(components), queue=False,
                    api_visibility="private")

    run_btn.click(protect_and_animate,
                  inputs=image_args + [frames_in, bucket_in, video_steps_in, robust_in],
                  outputs=[guarded_out, guarded_file, perturbation_out, video_original, video_guarded, numbers_out,
                           plot_out, seed_out, settings_out],
                  api_name="protect_and_animate", show_progress_on=[guarded_out, video_original, video_guarded],
                  **common)
    protect_btn.click(**clear(video_original, video_guarded, plot_out)).then(
        protect_image, inputs=image_args + [robust_in],
        outputs=[guarded_out, guarded_file, perturbation_out, numbers_out, seed_out, settings_out],
        api_name="protect", show_progress_on=[guarded_out], **common)
    animate_btn.click(**clear(guarded_out, guarded_file, perturbation_out, video_guarded, numbers_out, plot_out)).then(
        animate_image, inputs=[image_in, model_in, seed_in, randomize_in, frames_in, bucket_in, video_steps_in],
        outputs=[video_original, seed_out, settings_out], api_name="animate", show_progress_on=[video_original],
        **common)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    demo.queue(max_size=20).launch(**LAUNCH_OPTIONS)
