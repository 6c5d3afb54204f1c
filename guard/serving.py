"""What a Space needs beyond its interface: the models it offers and their pool, the page's defaults,
the GPU seconds a job reserves on ZeroGPU, and the admission of a job. No Gradio here: `app.py` turns
these into components, validators and `@spaces.GPU` durations, and a test or a script calls them as
plain functions.

Settings from the environment (read once, at import):

| variable | what | default |
| --- | --- | --- |
| `GUARD_MODELS` | comma-separated names of `guard.targets.MODELS` the Space offers | embedded (+ svd-xt, cogvideox with a GPU or `GUARD_HUB_MODELS=1`) |
| `GUARD_PRELOAD` | models loaded before the app starts: `all`, `first` or `none` | `all` on ZeroGPU, else `first` |
| `GUARD_DEFAULT_STEPS` | the steps slider's value for every method | each method's fast preset |
| `GUARD_QUEUE_SIZE` | jobs waiting in all | 20 |
| `GUARD_JOBS_PER_ADDRESS` | jobs queued or running per client address | 3 |
| `GUARD_MAX_JOB_SECONDS` | seconds a job may run | 600 |
| `GUARD_MAX_FILE_SIZE` | largest upload | 25mb |

The bounds of every number a visitor gives are `guard.limits`' (shared with the command line).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from . import example_cache, limits
from .io import InputError
from .methods import METHODS
from .jobs import CONTROL, Job, VideoOptions, check_method, default_steps, protection_seed
from .presets import settings_for
from .targets import DEFAULT_MODEL, EMBEDDED_PATH, FAMILIES, MODELS, TINY_MODELS, Target, load_target

logger = logging.getLogger(__name__)

QUEUE_SIZE = int(os.environ.get("GUARD_QUEUE_SIZE", "20"))
JOBS_PER_SESSION = 1  # a page or a gradio_client session: one job queued or running at a time
JOBS_PER_ADDRESS = int(os.environ.get("GUARD_JOBS_PER_ADDRESS", "3"))
MAX_JOB_SECONDS = float(os.environ.get("GUARD_MAX_JOB_SECONDS", "600"))
MAX_FILE_SIZE = os.environ.get("GUARD_MAX_FILE_SIZE", "25mb")  # uploads above this are refused by Gradio
REQUEST_DIR_MAX_AGE_S = 3600  # per-request folders older than this are removed
DEFAULT_EPS = 8
DEFAULT_STEPS_OVERRIDE = os.environ.get("GUARD_DEFAULT_STEPS")

# -- models offered --------------------------------------------------------------------------------------------
#: short labels: the dropdown is narrow on a phone
MODEL_LABELS = {
    "embedded": "embedded (small, runs on a CPU)",
    "svd": "Stable Video Diffusion (GPU)",
    "svd-xt": "Stable Video Diffusion XT (GPU)",
    "cogvideox": "CogVideoX-5B I2V (GPU)",
    "wan2.1-i2v-14b": "Wan 2.1 I2V 14B (GPU)",
    "wan2.2-i2v-a14b": "Wan 2.2 I2V A14B (GPU)",
    "wan2.2-ti2v-5b": "Wan 2.2 TI2V 5B (GPU)",
}
_NOT_EVALUATED = ("guard has not yet evaluated this model (it needs a machine with hub access): trust the verdict "
                  "under each result, not a method's name.")
_RANDOM = "Random weights, for tests: its videos are noise, and no verdict on it means anything."
#: what guard has measured on each model, shown under the model's name (the page promises no more)
MODEL_NOTES = {
    "embedded": "On this model, guard's evaluation (README, \"Results\") measured Vid-Freeze cutting a "
                "video's motion by 19% on average at 8/255 (8-29% across four photos), more than noise of the "
                "same budget: a measurable effect, not yet a protection. The verdict under each result says "
                "what happened to your photo.",
}
METHOD_LABELS = {
    "vidfreeze": "Vid-Freeze (aims to freeze the video)",
    "freeze": "Freeze (guard's own: still-video prediction at high noise; experimental)",
    "i2vguard": "I2VGuard (aims to ruin the video)",
    "photoguard": "PhotoGuard (encoder attack, a baseline)",
    CONTROL: "Random noise of the same budget (the control)",
}
#: the big models run in bfloat16 on a GPU (half the memory of float32 with its exponent range, which the
#: attack's gradients need); the small ones in float32 everywhere
BIG_MODELS = {"svd", "svd-xt", "cogvideox", "wan2.1-i2v-14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b"}


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, f"{model} (random weights, tests)" if model.startswith("tiny-") else model)


def model_note(model: str) -> str:
    return MODEL_NOTES.get(model, _RANDOM if model.startswith("tiny-") else _NOT_EVALUATED)


def gpu_present() -> bool:
    return torch.cuda.is_available()


def listed_models() -> list[str]:
    """The models this Space offers: GUARD_MODELS (comma-separated names of `guard.targets.MODELS`) if
    set; else the embedded model, plus SVD-XT and CogVideoX where a GPU is present or
    GUARD_HUB_MODELS=1. Falls back to tiny-svd when nothing else can load."""
    requested = os.environ.get("GUARD_MODELS", "")
    if requested.strip():
        names = [n.strip() for n in requested.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            logger.warning("GUARD_MODELS: ignoring unknown names %s (known: %s)", unknown, ", ".join(MODELS))
        names = [n for n in names if n in MODELS]
    else:
        names = [DEFAULT_MODEL]
        if os.environ.get("GUARD_HUB_MODELS") == "1" or gpu_present():
            names += ["svd-xt", "cogvideox"]
    if "embedded" in names and not (EMBEDDED_PATH / "model_index.json").is_file():
        logger.warning("the embedded model is not in %s: not offered", EMBEDDED_PATH)
        names.remove("embedded")
    return names or ["tiny-svd"]


class ModelPool:
    """The models a Space offers, each loaded once per process on first use (or by `preload`), then
    shared by every request."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self._targets: dict[str, Target] = {}
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return "cuda" if gpu_present() else "cpu"

    def check(self, model) -> str:
        """`model` if it is offered here, else InputError: a name a visitor typed is never loaded."""
        if model not in self.names:
            raise InputError(f"model must be one of {', '.join(self.names)}, got {model!r}: it is not offered here")
        return model

    def get(self, model: str) -> Target:
        self.check(model)
        with self._lock:
            if model not in self._targets:
                start = time.perf_counter()
                dtype = torch.bfloat16 if model in BIG_MODELS and self.device == "cuda" else torch.float32
                self._targets[model] = load_target(model, device=self.device, dtype=dtype)
                logger.info("loaded %s on %s in %.1f s", model, self.device, time.perf_counter() - start)
            return self._targets[model]

    def loaded(self, model: str) -> Target | None:
        return self._targets.get(model)

    def preload(self, which: str | None = None) -> None:
        """Load `which` models now: "all", "first" or "none" (default GUARD_PRELOAD; on ZeroGPU "all":
        each @spaces.GPU call runs in a forked worker, so a model first loaded there would be loaded again
        for every request, while weights loaded before the app starts move to the GPU once)."""
        which = which or os.environ.get("GUARD_PRELOAD", "all" if os.environ.get("SPACES_ZERO_GPU") else "first")
        for name in {"all": self.names, "none": []}.get(which, self.names[:1]):
            self.get(name)


def steps_for(method: str) -> int:
    """The steps slider's value for a method: its fast preset's, unless GUARD_DEFAULT_STEPS is set."""
    steps = default_steps(method) if DEFAULT_STEPS_OVERRIDE is None else int(DEFAULT_STEPS_OVERRIDE)
    return min(steps, limits.MAX_STEPS)


def page_defaults(model: str) -> dict:
    """The page's controls at start: what an example's stored result was made with."""
    return dict(method="vidfreeze", eps=DEFAULT_EPS, steps=steps_for("vidfreeze"), model=model, seed=0,
                randomize_seed=False, frames=0, motion_bucket=127, video_steps=0, robust=False)


def stored_examples(defaults: dict) -> example_cache.ExampleCache:
    """The stored results of the examples, for the page's defaults (read when first asked, not at import)."""
    model = defaults["model"]
    model_dir = MODELS.get(model)
    local = model_dir if model_dir and os.path.isdir(model_dir) else None
    family = FAMILIES[TINY_MODELS.get(model) or next(f for f, entry in FAMILIES.items() if model in entry.models)]
    cache = example_cache.load(example_cache.fingerprint(model, local, defaults, family.module))
    if cache.entries and not cache.fresh:
        logger.warning("examples/cache was made with another model, other settings or other code: clicked examples "
                       "run live; run `python scripts/cache_examples.py` to store their results again")
    return cache


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


# -- a visitor's job ------------------------------------------------------------------------------------------
def visitor_seed(seed, randomize: bool) -> int:
    """The seed of a visitor's videos: the one given (checked), or a random one when asked."""
    return secrets.randbelow(limits.MAX_SEED + 1) if randomize else limits.seed(seed)


def visitor_job(method, eps, steps, seed, randomize_seed, robust) -> tuple[Job, int]:
    """The protection a visitor asked for (its own seed derived from theirs: `jobs.protection_seed`) and
    the seed of their videos; InputError naming a value out of bounds."""
    seed = visitor_seed(seed, randomize_seed)
    job = Job(method=check_method(method), eps=limits.eps(eps), steps=limits.steps(steps), robust=bool(robust),
              seed=protection_seed(seed))
    return job, seed


def video_options(target: Target, frames, motion_bucket, video_steps) -> VideoOptions:
    """The video settings of the advanced controls (0: the model's default), checked for this model."""
    return VideoOptions(frames=frames, video_steps=video_steps, motion_bucket=motion_bucket).check(target)


class JobTooLong(Exception):
    """A job ran past MAX_JOB_SECONDS (raised from a progress callback, between steps)."""


def visitor_message(error: Exception) -> str | None:
    """The sentence a visitor reads for an expected refusal (a value out of bounds, a job past its time, the
    model out of memory); None for anything else (a bug: the app logs it with its traceback)."""
    if isinstance(error, InputError):
        return str(error) if str(error).endswith(".") else f"{error}."
    if isinstance(error, JobTooLong):
        return f"This job ran past the limit of {MAX_JOB_SECONDS:.0f} s per job and was stopped: try fewer steps or frames."
    if isinstance(error, torch.OutOfMemoryError):
        return "The model ran out of memory: try fewer frames or fewer steps."
    return None


def deadline() -> float:
    """When a job started now must stop (time.monotonic())."""
    return time.monotonic() + MAX_JOB_SECONDS


def progress_of(progress, label: str, until: float):
    """A callback(step, total, *terms) that reports to `progress((step, total), desc=...)` (the page's
    progress bar) and raises JobTooLong past `until`."""
    def callback(step, total, *_):
        if time.monotonic() > until:
            raise JobTooLong
        progress((step, total), desc=f"{label}: step {step}/{total}")
    return callback


def video_progress(progress, until: float):
    """`jobs.protect_and_animate`'s on_video: a progress callback per video role."""
    names = {"original": "original", "guarded": "guarded", "control": "noise control"}
    return lambda role: progress_of(progress, f"Animating the {names[role]} image", until)


def client_address(request) -> str:
    """The client's address of a request (the first X-Forwarded-For hop behind a proxy such as Spaces')."""
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
    return forwarded or (request.client.host if request.client else "")


#: the app's endpoints that run a model; a visitor may have JOBS_PER_SESSION of them queued or running
MODEL_JOBS = ("protect_and_animate", "protect", "animate", "survive_posting")


def jobs_in_flight(demo, request) -> tuple[int, int]:
    """(the request's session's, its address's) model jobs queued or running in a Gradio app's queue."""
    if request is None:
        return 0, 0
    events = list(getattr(getattr(demo, "_queue", None), "event_ids_to_events", {}).values())
    address, session, by_address = client_address(request), 0, 0
    for event in events:
        if getattr(event.fn, "api_name", None) not in MODEL_JOBS:
            continue
        session += event.session_hash == request.session_hash
        with contextlib.suppress(AttributeError):
            by_address += client_address(event.request) == address
    return session, by_address


# -- ZeroGPU time reservation -----------------------------------------------------------------------------------
# Seconds of GPU per unit of work, per model: `fixed` (moving inputs, VAE decode, writing), `pgd_step`
# (one protection step: forward + backward through the denoiser at the model's default frame count, scaled
# down for the fewer frames a preset attacks) and `denoise_frame_step` (one denoising step of one frame,
# classifier-free guidance included).
# SVD-XT and CogVideoX from benchmarks/bench_gpu.py on one H100 (bf16, README "Speed and memory"):
# SVD-XT generation 20.6 s for 25 steps x 25 frames (0.033 s a frame-step, decode included), a
# protection step 0.56 s at 8 of its 25 frames (1.75 s x 8/25); CogVideoX 1.91 s a step of 49 frames
# (0.039, plus decode), a protection step 5.9 s at all 49 frames (its fast Vid-Freeze reads 4 of 42 blocks,
# so this over-reserves it until re-measured). `fixed` covers I2VGuard's setup (its clean video: 3.5-3.9 s;
# made once per view kind when the photo's aspect differs from the model's) and the decode. SVD (14 frames)
# is scaled from SVD-XT; the embedded model is a CPU model. A ZeroGPU slice is slower than an H100: keep
# the margin.
GPU_COST = {
    "embedded": dict(fixed=5.0, pgd_step=0.10, denoise_frame_step=0.004, frames=8, video_steps=12),
    "svd": dict(fixed=15.0, pgd_step=1.0, denoise_frame_step=0.04, frames=14, video_steps=25),
    "svd-xt": dict(fixed=15.0, pgd_step=1.75, denoise_frame_step=0.04, frames=25, video_steps=25),
    "cogvideox": dict(fixed=30.0, pgd_step=6.0, denoise_frame_step=0.05, frames=49, video_steps=50),
    # Wan 2.1 14B on one H200 (bf16, random weights, transformer + VAE + CLIP; ../shared/NOTES.md): a forward
    # of 81 frames 3.2 s (x 2 with guidance: 0.08 s a frame-step), an attack step over all 40 blocks 12.4 s
    # (Vid-Freeze's 4 blocks: 1.33 s, so this over-reserves it), the VAE encode of the conditioning video
    # 1.1 s. A14B runs one 14B expert at a time: the same figures. TI2V-5B is not measured yet: the 14B's
    # figures, an upper bound (5B parameters over 27,280 tokens against 14B over 32,760).
    "wan2.1-i2v-14b": dict(fixed=30.0, pgd_step=12.4, denoise_frame_step=0.08, frames=81, video_steps=50),
    "wan2.2-i2v-a14b": dict(fixed=30.0, pgd_step=12.4, denoise_frame_step=0.08, frames=81, video_steps=50),
    "wan2.2-ti2v-5b": dict(fixed=30.0, pgd_step=12.4, denoise_frame_step=0.08, frames=121, video_steps=50),
    "tiny": dict(fixed=2.0, pgd_step=0.05, denoise_frame_step=0.01, frames=4, video_steps=3),
}
MIN_GPU_SECONDS, MAX_GPU_SECONDS = 10, 600


def _count(value, high: int) -> int:
    """A count from a request, as an int in [0, high] (0 for anything that is not a number)."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0
    return int(min(max(number, 0), high)) if math.isfinite(number) else 0


def gpu_seconds(model, method=None, steps=0, videos=0, frames=0, video_steps=0, loaded: Target | None = None) -> int:
    """GPU seconds to reserve for a job of `steps` protection steps and `videos` videos; every count is
    clamped to its limit, so a request cannot reserve more than the largest job the app would accept.
    `loaded`: the model's target once loaded (its own frame and step defaults, its preset's frames)."""
    model = str(model)
    cost = dict(GPU_COST.get("tiny" if model.startswith("tiny-") else model, GPU_COST["embedded"]))
    if loaded is not None:  # the loaded model knows its defaults better than the table
        cost.update(frames=loaded.num_frames, video_steps=loaded.num_inference_steps)
    if method == CONTROL:
        steps = 0
    # a protection step costs in proportion to the frames it attacks (the preset's, at most the model's)
    attack_frames = cost["frames"]
    if loaded is not None and method in METHODS:
        attack_frames = settings_for(method, "fast", loaded)[1].get("frames") or cost["frames"]
    pgd = _count(steps, limits.MAX_STEPS) * cost["pgd_step"] * min(attack_frames, cost["frames"]) / cost["frames"]
    frames = _count(frames, limits.MAX_FRAMES) or cost["frames"]
    video_steps = _count(video_steps, limits.MAX_VIDEO_STEPS) or cost["video_steps"]
    denoise = videos * video_steps * frames * cost["denoise_frame_step"]
    return int(min(max(cost["fixed"] + pgd + denoise, MIN_GPU_SECONDS), MAX_GPU_SECONDS))


# -- admission --------------------------------------------------------------------------------------------------
def _guarded(value) -> None:
    if not value:
        raise InputError("Protect the photo first: there is no guarded image to post")


def admission(inputs: dict, pool: ModelPool, session_jobs: int = 0, address_jobs: int = 0) -> dict[str, str]:
    """Why a job may not be queued, per input name: {name: sentence} for every value out of bounds (a
    sentence naming the parameter) and, on "image", for a visitor who already has a job queued or
    running (`session_jobs` >= JOBS_PER_SESSION) or an address with JOBS_PER_ADDRESS of them. Empty: admitted.
    A random seed (`randomize_seed`) is drawn, so the seed given is not checked. Loads nothing."""
    checks = {"method": check_method, "eps": limits.eps, "steps": limits.steps, "frames": limits.frames,
              "video_steps": limits.video_steps, "motion_bucket": limits.motion_bucket, "seed": limits.seed,
              "guarded": _guarded, "model": pool.check}
    refused = {}
    for name, value in inputs.items():
        if name not in checks or (name == "seed" and inputs.get("randomize_seed")):
            continue
        try:
            checks[name](value)
        except InputError as e:
            refused[name] = f"{e}."
    if "image" in inputs:
        if session_jobs >= JOBS_PER_SESSION:
            refused["image"] = "You already have a job queued or running: wait for its result (one job at a time per visitor)."
        elif address_jobs >= JOBS_PER_ADDRESS:
            refused["image"] = (f"{address_jobs} jobs from your address are already queued or running: wait for one of "
                                "them to finish.")
    return refused
