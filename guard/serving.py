"""What a Space needs beyond its interface: the models it offers and their pool, the page's defaults,
the GPU seconds a job reserves on ZeroGPU, and the admission of a job. No Gradio here: `app.py` turns
these into components, validators and `@spaces.GPU` durations, and a test or a script calls them as
plain functions.

Settings from the environment (read once, at import):

| variable | what | default |
| --- | --- | --- |
| `GUARD_MODELS` | comma-separated names of `guard.targets.MODELS` the Space offers (or of `RANDOM_MODELS`: full-size random weights, for a GPU test) | embedded (+ svd-xt, ltx-video, wan2.2-ti2v-5b with a GPU or `GUARD_HUB_MODELS=1`) |
| `GUARD_PRELOAD` | models loaded before the app starts: `all`, `first` or `none` | `all` on ZeroGPU, else `first` |
| `GUARD_GPU_SIZE` | the ZeroGPU size the entry points ask for: `large` (half a card, 48 GB) or `xlarge` (96 GB, twice the quota) | `gpu_size` of the models offered |
| `GUARD_DEFAULT_STEPS` | the steps slider's value for every method | each method's fast preset |
| `GUARD_QUEUE_SIZE` | jobs waiting in all | 20 |
| `GUARD_JOBS_PER_ADDRESS` | jobs queued or running per client address | 3 |
| `GUARD_MAX_JOB_SECONDS` | seconds a job may run | 600 |
| `GUARD_MAX_FILE_SIZE` | largest upload | 25mb |
| `GUARD_VIDEO_CACHE_MB` | MB of videos kept on disk between a visitor's jobs (`guard.videocache`) | 512 |
| `GUARD_VIDEO_CACHE_DIR` | their folder, kept across restarts (clear it when the model or the code changes) | a folder of the process's own, removed at exit |

The bounds of every number a visitor gives are `guard.limits`' (shared with the command line).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from . import example_cache, limits
from .io import InputError
from .methods import METHODS
from .jobs import CONTROL, Job, VideoOptions, check_method, default_steps, protection_seed
from .presets import default_method, settings_for
from .targets import (DEFAULT_MODEL, EMBEDDED_PATH, FAMILIES, MODELS, RANDOM_MODELS, TINY_MODELS, Target,
                      load_target)
from .videocache import VideoCache

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
    "ltx-video": "LTX-Video 2B (GPU)",
}
_NOT_EVALUATED = ("guard has not yet evaluated this model (it needs a machine with hub access): trust the verdict "
                  "under each result, not a method's name.")
_RANDOM = "Random weights, for tests: its videos are noise, and no verdict on it means anything."
#: what guard has measured on each model, shown under the model's name (the page promises no more); a model
#: without an entry (SVD, CogVideoX, Wan, LTX-Video) reads _NOT_EVALUATED
MODEL_NOTES = {
    "embedded": "On this model, guard's evaluation (README, \"Results\") measured Vid-Freeze cutting a "
                "video's motion by 19% on average at 8/255 (8-29% across four photos), more than noise of the "
                "same budget: a measurable effect, not yet a protection. The verdict under each result says "
                "what happened to your photo.",
}
_METHOD_LABELS = {
    "vidfreeze": "Vid-Freeze (aims to freeze the video)",
    "freeze": "Freeze (guard's own: still-video prediction at high noise; experimental)",
    "medusa": "MEDUSA (aims to freeze the video: the frame attention of one early block pushed toward rank 1; experimental)",
    "i2vguard": "I2VGuard (aims to ruin the video)",
    "photoguard": "PhotoGuard (encoder attack, a baseline)",
    CONTROL: "Random noise of the same budget (the control)",
}
#: the methods the page offers, in this order: those `guard.methods` has
METHOD_LABELS = {name: label for name, label in _METHOD_LABELS.items() if name in METHODS}
#: the big models run in bfloat16 on a GPU (half the memory of float32 with its exponent range, which the
#: attack's gradients need); the small ones in float32 everywhere. A random-weight model is its real model's size.
#: the GPU models a Space offers when GUARD_MODELS names none: those whose default visit is estimated to
#: reserve at most 60 s of half a card (docs/space.md); CogVideoX-5B-I2V (about 4.5 min a visit) and the
#: 14B Wan models (the whole card) only when GUARD_MODELS names them
GPU_DEFAULT_MODELS = ("svd-xt", "ltx-video", "wan2.2-ti2v-5b")
BIG_MODELS = {"svd", "svd-xt", "cogvideox", "wan2.1-i2v-14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "ltx-video"}
RANDOM_PREFIX = "random-"


def real_model(model: str) -> str:
    """The model a full-size random-weight model stands for ("random-svd-xt" -> "svd-xt"): its costs, video
    defaults and memory are that model's."""
    model = str(model)
    return model.removeprefix(RANDOM_PREFIX) if model in RANDOM_MODELS else model


def model_label(model: str) -> str:
    if model in RANDOM_MODELS:
        return f"{MODEL_LABELS.get(real_model(model), real_model(model))}, random weights (GPU test)"
    return MODEL_LABELS.get(model, f"{model} (random weights, tests)" if model.startswith("tiny-") else model)


def model_note(model: str) -> str:
    if model in RANDOM_MODELS or model.startswith("tiny-"):
        return _RANDOM
    return MODEL_NOTES.get(model, _NOT_EVALUATED)


def gpu_present() -> bool:
    return torch.cuda.is_available()


def listed_models() -> list[str]:
    """The models this Space offers: GUARD_MODELS (comma-separated names of `guard.targets.MODELS`, or of
    `RANDOM_MODELS` for a GPU test) if set; else the embedded model, plus SVD-XT and CogVideoX where a GPU is
    present or GUARD_HUB_MODELS=1. Falls back to tiny-svd when nothing else can load."""
    requested = os.environ.get("GUARD_MODELS", "")
    if requested.strip():
        names = [n.strip() for n in requested.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODELS and n not in RANDOM_MODELS]
        if unknown:
            logger.warning("GUARD_MODELS: ignoring unknown names %s (known: %s)", unknown,
                           ", ".join([*MODELS, *RANDOM_MODELS]))
        names = [n for n in names if n in MODELS or n in RANDOM_MODELS]
    else:
        names = [DEFAULT_MODEL]
        if os.environ.get("GUARD_HUB_MODELS") == "1" or gpu_present():
            names += list(GPU_DEFAULT_MODELS)
    if "embedded" in names and not (EMBEDDED_PATH / "model_index.json").is_file():
        logger.warning("the embedded model is not in %s: not offered", EMBEDDED_PATH)
        names.remove("embedded")
    return names or ["tiny-svd"]


class ModelPool:
    """The models a Space offers, each loaded once per process on first use (or by `preload`), then
    shared by every request, and the videos they made (`videos`: a second method or eps on the same photo
    makes only the guarded photo's video; `guard.videocache`)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        # files, which ZeroGPU's forked workers share; a folder of this process's own (named here, before any
        # fork; made at the first video), since the key names a model but not its weights or code: a restarted
        # app must not be handed the videos of the code or model it ran before
        folder = os.environ.get("GUARD_VIDEO_CACHE_DIR")
        if not folder:
            folder = temp_root() / f"guard-videos-{os.getpid()}-{secrets.token_hex(4)}"
            atexit.register(shutil.rmtree, folder, True)  # the process that named it removes it on exit
        self.videos = VideoCache(folder=folder)
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
                dtype = torch.bfloat16 if real_model(model) in BIG_MODELS and self.device == "cuda" else torch.float32
                target = load_target(model, device=self.device, dtype=dtype)
                self._targets[model] = space_length(target, model)
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
        log_memory("after preload")


def steps_for(method: str) -> int:
    """The steps slider's value for a method: its fast preset's, unless GUARD_DEFAULT_STEPS is set."""
    steps = default_steps(method) if DEFAULT_STEPS_OVERRIDE is None else int(DEFAULT_STEPS_OVERRIDE)
    return min(steps, limits.MAX_STEPS)


def page_defaults(model: str) -> dict:
    """The page's controls at start: what an example's stored result was made with."""
    method = default_method(model)
    return dict(method=method, eps=DEFAULT_EPS, steps=steps_for(method), model=model, seed=0,
                randomize_seed=False, frames=0, motion_bucket=127, video_steps=0, robust=False)


def stored_examples(defaults: dict) -> example_cache.ExampleCache:
    """The stored results of the examples, for the page's defaults (read when first asked, not at import)."""
    model = defaults["model"]
    model_dir = MODELS.get(model)
    local = model_dir if model_dir and os.path.isdir(model_dir) else None
    family = FAMILIES[_family(model)]
    cache = example_cache.load(example_cache.fingerprint(model, local, defaults, family.module))
    if cache.entries and not cache.fresh:
        logger.warning("examples/cache was made with another model, other settings or other code: clicked examples "
                       "run live; run `python scripts/cache_examples.py` to store their results again")
    return cache


def temp_root() -> Path:
    """Where the app writes its files: GRADIO_TEMP_DIR, else the system's temporary folder."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())


def request_dir() -> Path:
    """A fresh folder for one request's files (random name: two visitors never share one); folders
    older than REQUEST_DIR_MAX_AGE_S are removed on the way."""
    root = temp_root() / "guard-requests"
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


# -- the model thread ---------------------------------------------------------------------------------------------
_model_thread: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def model_thread() -> concurrent.futures.ThreadPoolExecutor:
    """This process's one thread for model work (made on first use, and again in a forked process).

    Why one: torch's OpenMP (libgomp) keeps its threads spinning between parallel regions only while the
    threads it manages are no more than the cores, and every OS thread that runs torch gets a team of its
    own. Gradio runs each request on one of many worker threads and the preload runs on the main thread,
    so OpenMP throttles its spinning and sleeps between regions: on this project's 2-core CPU, 8 `freeze`
    steps took 7.2 s on the main thread and 9.5-10.4 s on a second thread once the main one had run torch."""
    global _model_thread
    if _model_thread is None or _model_thread[0] != os.getpid():
        _model_thread = (os.getpid(), concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="guard-model"))
    return _model_thread[1]


def on_model_thread(fn):
    """`fn` run on `model_thread()` with the caller's context variables (Gradio's progress and request)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if threading.current_thread().name.startswith("guard-model"):
            return fn(*args, **kwargs)
        return model_thread().submit(contextvars.copy_context().run, fn, *args, **kwargs).result()
    return run


def gpu_entry(duration):
    """The decorator of an app entry point: `spaces.GPU` with `duration` (a function of the entry point's
    inputs) and the Space's size, around the entry point run on the model thread."""
    import spaces  # imported first by app.py: on ZeroGPU it must patch torch before CUDA starts

    def decorate(entry):
        return spaces.GPU(duration=duration, size=space_gpu_size())(on_model_thread(entry))
    return decorate


def progress_of(progress, label: str, until: float):
    """A callback(step, total, *terms) that reports to `progress((step, total), desc=...)` (the page's
    progress bar) and raises JobTooLong past `until`. At the last step it logs the seconds since it was made
    (the part's setup and steps; `TIMING_TAG`, for benchmarks/bench_space.py) and the GPU memory."""
    start = time.perf_counter()

    def callback(step, total, *_):
        if time.monotonic() > until:
            raise JobTooLong
        elapsed = time.perf_counter() - start  # the part's setup and steps so far: a rate that includes both
        left = f", about {math.ceil(elapsed / step * (total - step))} s left" if 0 < step < total else ""
        progress((step, total), desc=f"{label}: step {step}/{total}{left}")
        if step == total:
            logger.info("%s part %r steps=%d seconds=%.3f", TIMING_TAG, label, total, time.perf_counter() - start)
            log_memory(f"after {label!r}")
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


# -- ZeroGPU: sizes, video defaults, time reservation, memory --------------------------------------------------
# ZeroGPU runs on NVIDIA RTX PRO 6000 Blackwell Server Edition cards (188 SMs, 96 GB). `size="large"` (the
# default) is half a card, 48 GB; `size="xlarge"` the whole card at twice the quota. The `spaces` package
# (0.51.3, zero/configs.json and zero/client.py) multiplies the duration a function asks for by its
# `duration_factor`, 1.5 on this card, for every size but xlarge, and moves a Space to xlarge by itself when
# the tensors put on cuda at start exceed `xlarge_threshold` (45,097,156,608 bytes, about 42 GiB).
XLARGE_THRESHOLD = 45_097_156_608
DURATION_FACTOR = {"large": 1.5, "xlarge": 1.0}
GPU_SIZES = tuple(DURATION_FACTOR)
# How many times slower than one H200 (where guard's costs are measured) a ZeroGPU size runs guard's work:
# bf16 matrix products over thousands of video tokens, compute-bound. An H200 does 989 dense bf16 TFLOP/s
# (4.8 TB/s); the RTX PRO 6000 about 500 (4,000 sparse FP4 TOPS / 8; 1.8 TB/s), half a card about 250 (0.9
# TB/s): 4.0x on compute, 5.3x on bandwidth. The package's own factor says 3.3x: half a card is 1.5x slower
# than the ZeroGPU slice it replaced, an H200 MIG slice of 60 of its 132 SMs (1.5 x 132 / 60). We take 3.5
# for half a card and half that for a whole one; with MARGIN the reservation also covers the 4.0x of the
# peak ratio (3.5 x 1.3 = 4.55). To be replaced by times measured on ZeroGPU (benchmarks/bench_space.py).
SLOWDOWN = {"large": 3.5, "xlarge": 1.75}
#: a reservation is the estimated time on the card times MARGIN (never more than twice the estimate: a
#: request reserves the visitor's quota and a shorter one queues first)
MARGIN = 1.3
MIN_GPU_SECONDS, MAX_GPU_SECONDS = 10, 600

# Costs per model: seconds on one H200 (bf16) for `pgd_step` (one protection step through the whole
# denoiser, at the frames the preset attacks), `pgd_step_blocks` (one step whose forward stops after the
# first 4 attention layers: the presets with `layers` 4, Vid-Freeze's fast one), `video_step` (one denoising step of a video of
# `frames` frames, classifier-free guidance included), `decode` (a video's VAE decode); and `fixed`: seconds
# on the card itself, not scaled (moving the weights onto a fresh ZeroGPU worker's card at about 10 GB/s,
# the optical flow and the video files on the CPU). `frames` and `video_steps` are the Space's video defaults
# (`space_length`): the videos of a default "Protect & animate" (a protection and 3 videos), chosen so that
# it fits 60 s on the card the model needs (`visit_seconds`; the goal is 30 s, which only LTX-Video meets). A video step of more than `frames` frames is
# scaled by (frames ratio)**`frame_exponent` (2 for transformers: attention over all the video's tokens), of
# fewer frames linearly (an upper bound). Sources and choices:
# - SVD / SVD-XT: benchmarks/bench_gpu.py on one H100 (README "Speed and memory"; an H200 is no slower):
#   generation 0.033 s a frame-step (decode included); a protection step at 14 frames 1.04 s through the
#   whole UNet, 0.52 s with the forward stopped after down_blocks[1] (its first 4 temporal attention layers,
#   Vid-Freeze's fast preset), so 0.6 and 0.3 s at 8 frames. The protection attacks every frame of the
#   video, so the frame count costs twice: 8 frames (about 1 s at 7 fps) and 8 Euler steps (Karras sigmas:
#   the coarse motion the flow verdict measures is set in the first, high-noise steps): 43 s on half a card,
#   which a reservation with MARGIN keeps within 60 s.
# - CogVideoX-5B-I2V: H100, 1.91 s a guided step of its 49 frames (the only count it makes,
#   `CogVideoXTarget.check_num_frames`), a protection step 5.9 s through all 42 blocks, 0.65 s through 4
#   (Wan's measured ratio, 1.33 / 12.4; to be measured), decode about 3 s (an estimate). 10 steps: no
#   count fits 60 s (the decodes and the protection alone take 70 s of half a card): 4.5 min a visit.
# - Wan 2.1 I2V 14B, Wan 2.2 I2V A14B (xlarge: `gpu_size`): H200, 81 frames: a forward 3.2 s, an attack step
#   12.4 s through all blocks, 1.33 s through blocks 0-3, the conditioning encode 1.1 s (../shared/NOTES.md).
#   At 17 frames (5 latent frames, 7,800 tokens against 32,760) the forward's FLOPs (2 x params x tokens +
#   4 x tokens^2 x width x layers) are 0.15 of those at 81: 0.48 s, so 0.96 s a guided step; the attack
#   step 0.4 s (the VAE's share shrinks less). 17 frames (1 s at 16 fps) and 7 UniPC steps: 57 s of a card.
#   A14B runs one 14B expert a step: the same costs; two experts move onto the card.
# - Wan 2.2 TI2V-5B: not measured; the same FLOP count at 704 x 1280 (880 tokens a latent frame, 30 layers
#   of 3,072, 5B parameters) gives 0.135 s a forward at 25 frames (7 latent frames): 0.27 s a guided step.
#   25 frames (1 s at 24 fps) and 7 steps: 45 s of half a card (within 60 s reserved).
# - LTX-Video 2B: H200, 161 frames (6,930 tokens): a forward 0.12 s, an attack step 0.40 s through all
#   blocks, 0.087 s through blocks 0-3; scaled to 65 frames (2,970 tokens). 65 frames (2.7 s at 24 fps) and
#   20 steps: 37 s of half a card.
# - embedded: a 28M-parameter UNet at 128 x 128 (a CPU model); tiny-*: built in memory for tests.
GPU_COST = {
    "embedded": dict(fixed=3.0, pgd_step=0.10, video_step=0.04, decode=0.1, frames=8, video_steps=12),
    "svd": dict(fixed=3.0, pgd_step=0.6, pgd_step_blocks=0.3, video_step=0.27, decode=0.0, frames=8, video_steps=8),
    "svd-xt": dict(fixed=3.0, pgd_step=0.6, pgd_step_blocks=0.3, video_step=0.27, decode=0.0, frames=8,
                   video_steps=8),
    "cogvideox": dict(fixed=5.0, pgd_step=5.9, pgd_step_blocks=0.65, video_step=1.91, decode=3.0, frames=49,
                      video_steps=10, frame_exponent=2),
    "wan2.1-i2v-14b": dict(fixed=8.0, pgd_step=3.0, pgd_step_blocks=0.4, video_step=0.96, decode=0.5, frames=17,
                           video_steps=7, frame_exponent=2),
    "wan2.2-i2v-a14b": dict(fixed=10.0, pgd_step=3.0, pgd_step_blocks=0.4, video_step=0.96, decode=0.5, frames=17,
                            video_steps=7, frame_exponent=2),
    "wan2.2-ti2v-5b": dict(fixed=4.0, pgd_step=0.7, pgd_step_blocks=0.25, video_step=0.27, decode=0.7, frames=25,
                           video_steps=7, frame_exponent=2),
    "ltx-video": dict(fixed=3.0, pgd_step=0.17, pgd_step_blocks=0.04, video_step=0.103, decode=0.3, frames=65,
                      video_steps=20, frame_exponent=2),
    "tiny": dict(fixed=2.0, pgd_step=0.05, video_step=0.03, decode=0.0, frames=4, video_steps=3),
}
#: models that need the whole card: Wan 2.2 A14B's two experts alone are 54 GiB; Wan 2.1 14B's weights are
#: 33 GiB and its attack at 81 frames peaked at 46 GiB on an H200, past half a card's 48 GB
XLARGE_MODELS = {"wan2.1-i2v-14b", "wan2.2-i2v-a14b"}
#: bytes each model puts on cuda at start, estimated by `start_memory(estimate=True)` (parameters and
#: buffers of the random-weight builders, text encoders dropped after load as the targets do; the embedded
#: model's float32 files); re-measured on a GPU by benchmarks/bench_space.py
START_BYTES = {
    "embedded": 53_065_184,  # 0.0 GiB
    "svd": 4_508_887_514,  # 4.2 GiB
    "svd-xt": 4_508_887_514,  # 4.2 GiB
    "cogvideox": 11_681_342_918,  # 10.9 GiB
    "wan2.1-i2v-14b": 35_879_836_244,  # 33.4 GiB
    "wan2.2-i2v-a14b": 57_782_008_012,  # 53.8 GiB
    "wan2.2-ti2v-5b": 12_841_325_040,  # 12.0 GiB
    "ltx-video": 5_716_754_532,  # 5.3 GiB
}


def cost_key(model) -> str:
    """The GPU_COST entry of a model: its own, its real model's for a random-weight one, "tiny" for a tiny one,
    else the embedded model's."""
    model = real_model(str(model))
    return "tiny" if model.startswith("tiny-") else model if model in GPU_COST else "embedded"


def space_length(target: Target, model: str) -> Target:
    """`target` set to this Space's video defaults for `model` (GPU_COST's `frames` and `video_steps`): what
    0 frames and 0 denoising steps mean on the page and the API, and the frame count the protection attacks
    (a transformer's attack builds the conditioning video and the positions of the video it protects: both
    must be the video's). Models outside BIG_MODELS keep their own."""
    if real_model(model) in BIG_MODELS:
        cost = GPU_COST[cost_key(model)]
        target.check_num_frames(cost["frames"])  # ValueError if the table names a count the model cannot make
        target.num_frames, target.num_inference_steps = cost["frames"], cost["video_steps"]
    return target


def gpu_size(models) -> str:
    """The ZeroGPU size a Space offering `models` needs: "xlarge" when one of them is in XLARGE_MODELS or
    their weights (START_BYTES) pass the package's threshold (it would move the Space to xlarge anyway),
    else "large"."""
    names = [real_model(m) for m in models]
    if any(m in XLARGE_MODELS for m in names) or sum(START_BYTES.get(m, 0) for m in names) > XLARGE_THRESHOLD:
        return "xlarge"
    return "large"


@functools.cache
def space_gpu_size() -> str:
    """The size this Space's entry points ask for: GUARD_GPU_SIZE if set, else `gpu_size(listed_models())`."""
    size = os.environ.get("GUARD_GPU_SIZE", "").strip() or gpu_size(listed_models())
    if size not in GPU_SIZES:
        raise ValueError(f"GUARD_GPU_SIZE must be one of {', '.join(GPU_SIZES)}, got {size!r}")
    return size


def _family(model: str) -> str:
    """The family (a key of FAMILIES) of a model name: tiny, random-weight or named."""
    return (TINY_MODELS.get(model) or RANDOM_MODELS.get(model)
            or next((f for f, entry in FAMILIES.items() if model in entry.models), "svd"))


def _count(value, high: int) -> int:
    """A count from a request, as an int in [0, high] (0 for anything that is not a number)."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0
    return int(min(max(number, 0), high)) if math.isfinite(number) else 0


def _scale(frames: int, reference: int, exponent: float) -> float:
    ratio = frames / reference
    return ratio if ratio <= 1 else ratio ** exponent


def visit_seconds(model, method=None, steps=0, videos=0, frames=0, video_steps=0, loaded: Target | None = None,
                  size: str | None = None) -> float:
    """Estimated seconds of a ZeroGPU card of `size` (default `space_gpu_size()`) for a job of `steps`
    protection steps and `videos` videos (GPU_COST, SLOWDOWN); every count clamped to its limit. `loaded`: the
    model's target once loaded (its frame and step defaults, its preset's frames)."""
    size = size or space_gpu_size()
    cost = GPU_COST[cost_key(model)]
    work_frames = loaded.num_frames if loaded is not None else cost["frames"]
    default_steps_ = loaded.num_inference_steps if loaded is not None else cost["video_steps"]
    exponent = cost.get("frame_exponent", 1)
    pgd = 0.0
    if method != CONTROL:
        params, step = {}, cost["pgd_step"]
        if method in METHODS:
            preset_target = loaded or SimpleNamespace(family=_family(real_model(str(model))), num_frames=work_frames)
            params = settings_for(method, "fast", preset_target)[1]
            if (params.get("layers") or method == "medusa") and "pgd_step_blocks" in cost:  # MEDUSA: one early block
                step = cost["pgd_step_blocks"]
        attack_frames = min(params.get("frames") or work_frames, work_frames)
        pgd = _count(steps, limits.MAX_STEPS) * step * _scale(attack_frames, cost["frames"], exponent)
    frames = _count(frames, limits.MAX_FRAMES) or work_frames
    video_steps = _count(video_steps, limits.MAX_VIDEO_STEPS) or default_steps_
    video = video_steps * cost["video_step"] * _scale(frames, cost["frames"], exponent)
    video += cost["decode"] * frames / cost["frames"]
    return cost["fixed"] + SLOWDOWN[size] * (pgd + _count(videos, 3) * video)


def gpu_seconds(model, method=None, steps=0, videos=0, frames=0, video_steps=0, loaded: Target | None = None,
                size: str | None = None) -> int:
    """The duration an entry point's `@spaces.GPU` asks for: `visit_seconds` x MARGIN, divided by the package's
    DURATION_FACTOR for `size` (it multiplies what it is asked for by that much), whole seconds in
    [MIN_GPU_SECONDS, MAX_GPU_SECONDS]. Arguments as `visit_seconds`."""
    size = size or space_gpu_size()
    seconds = visit_seconds(model, method, steps, videos, frames, video_steps, loaded, size) * MARGIN
    return int(min(max(math.ceil(seconds / DURATION_FACTOR[size]), MIN_GPU_SECONDS), MAX_GPU_SECONDS))


def reserved_seconds(duration: int, size: str | None = None) -> float:
    """What ZeroGPU reserves (and holds against the visitor's quota) for a `@spaces.GPU` duration: the duration
    times DURATION_FACTOR, twice that of the quota on xlarge."""
    size = size or space_gpu_size()
    return duration * DURATION_FACTOR[size] * (2 if size == "xlarge" else 1)


# -- memory at start ---------------------------------------------------------------------------------------------
#: the model sets docs/space.md documents, by name
MODEL_SETS = {
    "default (CPU)": ["embedded"],
    "default (GPU)": ["embedded", *GPU_DEFAULT_MODELS],
    "SVD family and LTX-Video": ["embedded", "svd-xt", "ltx-video"],
    "small GPU models": ["embedded", "svd-xt", "cogvideox", "ltx-video", "wan2.2-ti2v-5b"],
    "Wan 2.2 TI2V-5B": ["wan2.2-ti2v-5b"],
    "Wan 2.1 I2V 14B": ["wan2.1-i2v-14b"],
    "Wan 2.2 I2V A14B": ["wan2.2-i2v-a14b"],
    "every family": ["embedded", "svd-xt", "cogvideox", "ltx-video", "wan2.2-ti2v-5b", "wan2.1-i2v-14b"],
}
#: pipeline components a target drops after load (the prompt is fixed: encoded once)
DROPPED_AT_LOAD = ("text_encoder",)


def _module_bytes(modules) -> int:
    seen, total = set(), 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def estimated_start_bytes(model: str) -> int:
    """Bytes of `model`'s weights on cuda at start, estimated without loading any: the parameters and buffers of
    its random-weight builder built on the meta device (bfloat16 where the pool would load it so; the target's
    own setup, which runs the models, skipped), less the components DROPPED_AT_LOAD; the embedded model's files
    (float32); a tiny model built on the CPU. ValueError for a model with no builder."""
    from unittest import mock

    real = real_model(model)
    if real == "embedded":
        return sum(f.stat().st_size for f in EMBEDDED_PATH.rglob("*.safetensors"))
    if model in TINY_MODELS:
        target = load_target(model)
        return _module_bytes(m for m in target.pipe.components.values() if isinstance(m, torch.nn.Module))
    builder = model if model in RANDOM_MODELS else RANDOM_PREFIX + real
    if builder not in RANDOM_MODELS:
        raise ValueError(f"model {model!r} has no random-weight builder to estimate its size from")
    family = FAMILIES[RANDOM_MODELS[builder]]

    def keep_pipe(self, pipe, *args, **kwargs):
        self.pipe = pipe

    with mock.patch.object(family.target_class, "__init__", keep_pipe):
        pipe = load_target(builder, device="meta", dtype=torch.bfloat16).pipe
    return _module_bytes(m for name, m in pipe.components.items()
                         if isinstance(m, torch.nn.Module) and name not in DROPPED_AT_LOAD)


def start_memory(sets: dict[str, list[str]] | None = None, measure: bool | None = None) -> dict[str, dict]:
    """Per model set (default MODEL_SETS): {"bytes": the models' weights on cuda at start, "how": "measured" or
    "estimate", "size": `gpu_size` of the set, "fits_large": whether the bytes stay under XLARGE_THRESHOLD}.
    measure (default: a GPU is present) loads each model on cuda, alone, and reads
    torch.cuda.memory_allocated before and after; else `estimated_start_bytes`."""
    sets = MODEL_SETS if sets is None else sets
    measure = gpu_present() if measure is None else measure
    per_model = {}
    for model in dict.fromkeys(m for names in sets.values() for m in names):
        if measure:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            dtype = torch.bfloat16 if real_model(model) in BIG_MODELS else torch.float32
            target = load_target(model, device="cuda", dtype=dtype)
            torch.cuda.synchronize()
            per_model[model] = torch.cuda.memory_allocated() - before
            del target
            torch.cuda.empty_cache()
        else:
            per_model[model] = estimated_start_bytes(model)
    return {name: dict(models=list(names), bytes=sum(per_model[m] for m in names),
                       how="measured" if measure else "estimate", size=gpu_size(names),
                       fits_large=sum(per_model[m] for m in names) <= XLARGE_THRESHOLD)
            for name, names in sets.items()}


# -- what the server logs for benchmarks/bench_space.py ----------------------------------------------------------
TIMING_TAG = "guard-timing"  # the prefix of the lines bench_space.py reads from the server's log


def log_memory(when: str) -> None:
    """Logs the GPU memory allocated now and at its peak (bytes), where a GPU is in use in this process
    (never on ZeroGPU's main process, where touching CUDA is refused)."""
    if gpu_present() and not os.environ.get("SPACES_ZERO_GPU") and torch.cuda.is_initialized():
        logger.info("%s memory %s allocated=%d peak=%d", TIMING_TAG, when, torch.cuda.memory_allocated(),
                    torch.cuda.max_memory_allocated())


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
