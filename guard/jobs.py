"""The one chain every surface runs: protect a photo, make its videos, judge it.

    protection = protect_photo(target, photo, Job(method="vidfreeze", eps=8, seed=...))
    control    = protect_photo(target, photo, Job(method="noise", eps=8, seed=...))   # the control
    frames     = animate(target, picture, video_seed, VideoOptions())
    numbers    = report.measure(original, guarded, control, videos)                  # the verdict

`protect_and_animate` and `survive_posting` are those steps in the order the app's buttons run them;
the CLI (`python -m guard protect | animate`), the evaluation (`guard.evaluate`, also through
`guard.distributed`), the example cache and the benchmarks call the same functions, so the page's
verdict and the README's tables measure the same things:

- **the control** is the `noise` method (`guard.methods.noise`: every pixel channel moved by +eps or
  -eps, a random sign each) run through the same `protect` as every method, with the protection's own
  seed. One definition, wherever a result is judged.
- **"posted online"** is `report.posted` (0.75x downsize with area averaging, then JPEG at quality 75),
  applied alike to the original, the guarded photo and the control.
- **seeds**: a protection has its own seed (`Job.seed`), never the seed of a video it is judged on.
  The app derives it from the visitor's seed with `protection_seed` (above every video seed); the
  evaluation uses 0 and video seeds from 1000.
- **videos** depend only on the model, the picture, the video seed and the options, so with a `cache`
  (`guard.videocache.VideoCache`, the app's) a second method or eps on the same photo makes only the
  guarded photo's video; without one (the CLI, the evaluation) every video is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import PIL.Image

from . import limits, report
from .io import InputError, keep_gray
from .methods import METHODS, Method, get_method
from .optimize import PGDConfig, Protection, protect
from .presets import LOOP, PRESETS, settings_for
from .targets.base import Target
from .videocache import VideoCache, video_key

#: the method every other is compared with (the page's third video, the evaluation's paired differences)
CONTROL = "noise"


def check_method(name) -> str:
    """`name` if it names a method of `guard.methods.METHODS`, else InputError naming them all."""
    if name not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {name!r}")
    return name


def default_steps(method: str, preset: str = "fast") -> int:
    """PGD steps of a method's preset (`guard.presets.PRESETS`; a model family may differ, see
    `settings_for`): what the page's steps slider starts from."""
    return PRESETS[check_method(method)][preset][0]


@dataclass
class Job:
    """One protection, as a person asks for it.

    method: a name of `guard.methods.METHODS`; eps: the L-inf budget in 8-bit levels (eps/255 in [0, 1]
    units); steps: PGD steps (None: the preset's); preset: "fast" (the app's and the CLI's default) or
    "reference" (`guard.presets`); params: method parameters over the preset's; seed: the protection's
    own seed (`PGDConfig.seed`); robust: EOT through random JPEG / resize / crop; working_size: guard the
    photo center-cropped to the model's working size instead of at its own size; step_size: PGD step in
    8-bit levels (None: the method's `presets.LOOP` step, else 2.5 eps / steps); random_start: start from a
    random point of the eps-ball (None: the method's `presets.LOOP` choice, else yes)."""

    method: str = "vidfreeze"
    eps: int = 8
    steps: int | None = None
    preset: str = "fast"
    params: dict = field(default_factory=dict)
    seed: int = 0
    robust: bool = False
    working_size: bool = False
    step_size: float | None = None
    random_start: bool | None = None

    def __post_init__(self):
        check_method(self.method)
        limits.eps(self.eps)
        if self.steps is not None:
            limits.steps(self.steps)

    def build(self, target: Target) -> tuple[Method, PGDConfig]:
        """The method object and loop settings of this job on `target`: the preset's steps and
        parameters for the target's family, then the job's own (the one preset -> method -> config
        chain)."""
        preset_steps, params = settings_for(self.method, self.preset, target)
        method = get_method(self.method, **{**params, **self.params})
        steps = preset_steps if self.steps is None else self.steps
        loop = LOOP.get(self.method, {})
        step_size = self.step_size if self.step_size is not None else loop.get("step_of_eps", 0) * self.eps
        random_start = self.random_start if self.random_start is not None else loop.get("random_start", True)
        config = PGDConfig(eps=self.eps / 255, steps=steps if method.uses_gradient else 0, robust=self.robust,
                           seed=self.seed, working_size=self.working_size, random_start=random_start,
                           step_size=step_size / 255 if step_size else None)
        return method, config


def protect_photo(target: Target, photo: PIL.Image.Image, job: Job, callback=None) -> Protection:
    """Guard `photo` (8-bit, any size) as `job` asks; `callback(step, steps, terms)` after each step."""
    method, config = job.build(target)
    protection = protect(target, photo, method, config, callback=callback)
    protection.image = keep_gray(protection.original, protection.image)  # a black-and-white photo stays so
    return protection


def control_of(job: Job) -> Job:
    """The control of a job: the noise method at the job's budget, size and seed."""
    return Job(method=CONTROL, eps=job.eps, seed=job.seed, working_size=job.working_size)


def protection_seed(video_seed: int) -> int:
    """The app's protection seed for a visitor's seed: above every seed a video can have
    (0..`limits.MAX_SEED`), so that a protection never sees the seed of the videos it is shown against."""
    return limits.MAX_SEED + 1 + video_seed


@dataclass
class VideoOptions:
    """How a video is made: frames and denoising steps (None: the model's defaults) and, for a family
    conditioned on one (SVD), the motion bucket (None: the model's default). Families ignore options
    they do not have (`Target.generate`)."""

    frames: int | None = None
    video_steps: int | None = None
    motion_bucket: int | None = None

    def check(self, target: Target) -> VideoOptions:
        """These options with every count checked (`guard.limits`, 0 read as the model's default) and a
        frame count the model cannot make refused (InputError naming the parameter)."""
        checked = VideoOptions(limits.frames(self.frames), limits.video_steps(self.video_steps),
                               None if self.motion_bucket is None else limits.motion_bucket(self.motion_bucket))
        try:
            target.check_num_frames(checked.frames)
        except ValueError as e:  # e.g. CogVideoX-5B-I2V makes 49-frame videos only
            raise InputError(str(e)) from None
        return checked

    def settings(self) -> dict:
        """The options as the page and the stored results record them (0: the model's default)."""
        settings = dict(frames=self.frames or 0, video_steps=self.video_steps or 0)
        if self.motion_bucket is not None:
            settings["motion_bucket"] = self.motion_bucket
        return settings


def animate(target: Target, picture, seed: int, options: VideoOptions | None = None, callback=None,
            cache: VideoCache | None = None) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of the video `target` makes from `picture` (a PIL image or uint8 array
    of any size, handed to the pipeline as it is) with `seed`; `callback(step, steps)` per denoising step.
    With a `cache` (`guard.videocache`), a video it holds is not made again (the callback then reports
    every step done at once) and a video made is stored; its frames are then read-only."""
    options = options or VideoOptions()
    if isinstance(picture, np.ndarray):
        picture = PIL.Image.fromarray(picture)
    key = None if cache is None else video_key(target, picture, seed, options)
    if key is not None and (frames := cache.get(key)) is not None:
        if callback is not None:
            steps = options.video_steps or getattr(target, "num_inference_steps", None) or 1
            callback(steps, steps)
        return frames
    extra = {} if options.motion_bucket is None else {"motion_bucket_id": options.motion_bucket}
    video = target.generate(picture, seed=seed, num_frames=options.frames, num_inference_steps=options.video_steps,
                            callback=callback, **extra)
    return video.frames if key is None else cache.put(key, video.frames)


@dataclass
class Result:
    """A judged protection: the photos (uint8 (H, W, 3)) by role ("original", "guarded", "control"),
    their videos by the same roles, and the numbers with the verdict (`report.measure`)."""

    pictures: dict[str, np.ndarray]
    videos: dict[str, np.ndarray]
    numbers: dict
    protection: Protection | None = None


def protect_and_animate(target: Target, photo: PIL.Image.Image, job: Job, video_seed: int | None,
                        options: VideoOptions | None = None, on_step=None, on_video=None,
                        cache: VideoCache | None = None) -> Result:
    """Guard `photo`, make the control, animate the original, the guarded photo and the control with
    `video_seed` (None: no videos, the photos alone are measured), and judge. `on_step` is `protect`'s
    callback; `on_video(role)` returns the callback(step, steps) of the video of that role ("original",
    "guarded", "control"), or None. The control is left out when the method is the control itself.
    `cache`: videos already made (`animate`); None makes every video (the CLI, the evaluation)."""
    protection = protect_photo(target, photo, job, callback=on_step)
    pictures = {"original": np.asarray(protection.original), "guarded": np.asarray(protection.image)}
    if job.method != CONTROL:
        pictures["control"] = np.asarray(protect_photo(target, photo, control_of(job)).image)
    videos = {} if video_seed is None else {
        role: animate(target, picture, video_seed, options, on_video(role) if on_video else None, cache)
        for role, picture in pictures.items()}
    numbers = report.measure(pictures["original"], pictures["guarded"], pictures.get("control"), videos or None,
                             is_control=job.method == CONTROL)
    return Result(pictures, videos, numbers, protection)


def budget_of(original: np.ndarray, guarded: np.ndarray) -> int:
    """The L-inf budget a guarded photo (uint8 (H, W, 3)) spent on `original`, in 8-bit levels; InputError
    when it cannot have been made from it (another size, unchanged, or beyond `limits.MAX_EPS`)."""
    eps = -1
    if guarded.shape == original.shape:
        eps = int(np.abs(guarded.astype(np.int16) - original.astype(np.int16)).max())
    if not 0 < eps <= limits.MAX_EPS:
        raise InputError(f"the guarded image ({guarded.shape[1]}x{guarded.shape[0]}) was not made from this photo "
                         f"({original.shape[1]}x{original.shape[0]}): protect the photo again")
    return eps


def survive_posting(target: Target, photo: PIL.Image.Image, guarded: np.ndarray, job: Job, video_seed: int,
                    options: VideoOptions | None = None, on_video=None, cache: VideoCache | None = None) -> Result:
    """Post the original, the guarded photo (uint8, the photo's size) and the control of `job` alike
    (`report.posted`), animate each with `video_seed` and judge the guarded one against the posted
    original. `job` is the protection's: its eps and seed remake the same control. `cache`: videos
    already made (`animate`); None makes every video."""
    original = np.asarray(photo.convert("RGB"))
    control = np.asarray(protect_photo(target, photo, control_of(job)).image)
    pictures = {role: report.posted(picture) for role, picture in
                (("original", original), ("guarded", guarded), ("control", control))}
    videos = {role: animate(target, picture, video_seed, options, on_video(role) if on_video else None, cache)
              for role, picture in pictures.items()}
    numbers = report.measure(pictures["original"], pictures["guarded"], pictures["control"], videos,
                             is_control=False, prefix="After posting: ")
    return Result(pictures, videos, numbers)
