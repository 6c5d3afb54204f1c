"""`python -m guard animate | protect | evaluate`: the command line mirrors what the app does.

Every command runs the chain of `guard.jobs`, as the app does. What a person can get wrong (a value
out of bounds, an unreadable photo, an unknown model, a file that cannot be written) is refused with
one line, `error: ...`, and exit status 2: an `io.InputError` raised where the value is checked, or
an OSError about a file. Anything else is a bug and shows its traceback; with -v a refusal logs its
traceback too.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from . import distributed, io, jobs, limits
from .methods import METHODS
from .presets import default_method
from .targets import DEFAULT_MODEL, MODELS

logger = logging.getLogger("guard")


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError:
        raise io.InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    return name


def load(args):
    import torch

    from .targets import load_target

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    try:
        return load_target(args.model, device=pick_device(args.device), dtype=dtype)
    except io.InputError:
        raise
    except ValueError as e:  # load_target's refusal of the name: an unknown model, a folder of no known family
        raise io.InputError(f"--model: {e}") from e


def check_output(path: str, suffix: str, what: str) -> None:
    """Refuse an output name that would not be written as promised (before any model loads)."""
    output = Path(path)
    if output.suffix.lower() != suffix:
        raise io.InputError(f"{output}: {what}; name it {suffix}")
    if output.is_dir():
        raise io.InputError(f"{output}: is a folder; give a file name ending in {suffix}")


def cmd_animate(args) -> int:
    # every input is checked before the model loads (loading takes seconds; a typo should not), named
    # as the option the person typed; what only the model can tell (its frame counts) right after
    options = jobs.VideoOptions(frames=limits.frames(args.frames, "--frames"),
                                video_steps=limits.video_steps(args.video_steps, "--video-steps"))
    limits.seed(args.seed, "--seed")
    limits.fps(args.fps, "--fps")
    check_output(args.output, ".mp4", "the video is written as H.264 mp4")
    image, notices = io.load_image(args.image, limits.MAX_SIDE)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    target = load(args)
    options = options.check(target)
    from tqdm import tqdm

    start = time.perf_counter()
    total = options.video_steps or target.num_inference_steps
    with tqdm(total=total, desc="denoising", unit="step", leave=False, disable=args.quiet) as bar:
        def progress(step, total):
            bar.update(step - bar.n)

        frames = jobs.animate(target, image, args.seed, options, callback=progress)
    io.save_video(frames, args.output, fps=args.fps)
    print(f"{args.output}: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]} "
          f"from {args.model}, seed {args.seed}, {time.perf_counter() - start:.1f} s")
    return 0


def protect_one(target, path, output, job: jobs.Job, quiet: bool = False) -> dict:
    """Protect one image file at its own size (at most `limits.MAX_SIDE` a side) as `job` asks and
    write the guarded PNG, with the photo's ICC profile; returns its imperceptibility numbers."""
    import numpy as np
    from tqdm import tqdm

    from . import metrics

    image, notices = io.load_image(path, limits.MAX_SIDE)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    bars = []  # made at the first step: the control takes none, and an empty bar would read "0it"

    def progress(step, steps, terms):
        if not bars:
            bars.append(tqdm(total=steps, desc=Path(path).name, unit="step", leave=False, disable=quiet))
        bars[0].set_postfix({k: f"{v:.4g}" for k, v in terms.items() if k != "loss"}, refresh=False)
        bars[0].update(1)

    try:
        result = jobs.protect_photo(target, image, job, callback=progress)
    finally:
        for bar in bars:
            bar.close()
    io.save_png(result.image, output)
    numbers = metrics.imperceptibility(np.asarray(result.original), np.asarray(result.image))
    print(f"{output}: {result.image.width}x{result.image.height}, {result.method} eps {job.eps}/255, "
          f"{result.settings['steps']} steps, "
          f"{result.seconds:.1f} s | PSNR {numbers['psnr']:.2f} dB, SSIM {numbers['ssim']:.4f}, "
          f"L-inf {numbers['linf']}/255")
    return numbers


def output_name(path: Path, files: list[Path]) -> str:
    """The guarded PNG's name in folder mode: the input's stem + ".png" ("cat.jpg" -> "cat.png"), or,
    when several inputs share that stem ("a.jpg" and "a.png"), its whole name + ".png" ("a.jpg.png",
    "a.png.png"), so that no guarded image overwrites another."""
    shared = sum(f.stem.lower() == path.stem.lower() for f in files) > 1
    return (path.name if shared else path.stem) + ".png"


def check_step_size(args) -> None:
    if args.step_size is not None and not 0 < args.step_size <= args.eps:
        raise io.InputError(f"--step-size must be above 0 and at most --eps ({args.eps}), got {args.step_size}")


def check_steps(steps: int | None, methods: list[str]) -> None:
    """--steps 0 is refused for a method that optimises (it would hand back its starting point under its
    own name; `guard.optimize.protect` refuses it too, as a library error)."""
    optimising = [m for m in methods if METHODS[m].uses_gradient]
    if steps == 0 and optimising:
        raise io.InputError(f"--steps must be at least 1 for {', '.join(optimising)} (0 steps optimise nothing; "
                            f"the {jobs.CONTROL} method is the control that optimises nothing), got 0")


def cmd_protect(args) -> int:
    limits.eps(args.eps, "--eps")
    if args.steps is not None:
        limits.steps(args.steps, "--steps")
    limits.seed(args.seed, "--seed")
    check_step_size(args)
    method = args.method or default_method(args.model)
    check_steps(args.steps, [method])
    job = jobs.Job(method=method, eps=args.eps, steps=args.steps, preset=args.preset, seed=args.seed,
                   robust=args.robust, step_size=args.step_size, random_start=False if args.no_random_start else None)
    source, output = Path(args.input), Path(args.output)
    if source.is_dir():
        images = io.list_images(source)
        if not images:
            raise io.InputError(f"{source}: no images in this folder")
        if output.resolve() == source.resolve():
            raise io.InputError("the output folder must differ from the input folder (originals are never overwritten)")
        if output.exists() and not output.is_dir():
            raise io.InputError(f"{output}: exists and is not a folder")
        pairs = [(f, output / output_name(f, images)) for f in images]
    else:
        if not source.exists():
            raise io.InputError(f"{source}: no such file")
        if output.suffix.lower() != ".png":
            raise io.InputError(f"{output}: the guarded image is written as PNG (lossless); name it .png")
        if output.resolve() == source.resolve():
            raise io.InputError("the output must differ from the input (originals are never overwritten)")
        pairs = [(source, output)]
        io.load_image(source)  # an unreadable image is refused now, not after the model has loaded
    args.device = distributed.device(args.device)  # several processes (accelerate launch): each its own GPU
    target = load(args)
    # each process protects its share of the images (one process: all of them); several processes'
    # per-image bars would interleave, so then the main process shows one bar of images instead
    quiet = args.quiet or distributed.processes() > 1
    failed = distributed.protect_all(pairs, lambda path, out: protect_one(target, path, out, job, quiet),
                                     folder=output if source.is_dir() else output.parent, progress=not args.quiet)
    if not distributed.is_main():
        return 0  # the main process reports for all, and exits last (torchrun stops the others at a failure)
    if failed:
        print(f"{len(pairs) - len(failed)} of {len(pairs)} images protected; skipped: "
              f"{', '.join(p.name for p, _ in failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args) -> int:
    import shlex

    from . import evaluate

    files = io.list_images(args.images)
    if not files:
        raise io.InputError(f"{args.images}: no images in this folder")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise io.InputError(f"--methods is a comma-separated list of methods (e.g. noise,vidfreeze), "
                            f"got {args.methods!r}")
    for method in methods:
        try:
            jobs.check_method(method)
        except io.InputError as e:
            raise io.InputError(f"--methods: {e}") from None
    try:
        eps = [int(e) for e in args.eps.split(",") if e.strip()]
    except ValueError:
        raise io.InputError(f"--eps is a comma-separated list of 8-bit levels (e.g. 4,8,16), got {args.eps!r}") from None
    if args.video_seeds < 1:
        raise io.InputError(f"--video-seeds is how many video seeds to judge each protection at (>= 1), "
                            f"got {args.video_seeds}")
    if not eps:
        raise io.InputError(f"--eps is a comma-separated list of 8-bit levels (e.g. 4,8,16), got {args.eps!r}")
    for e in eps:
        limits.eps(e, "--eps")
    if args.steps is not None:
        limits.steps(args.steps, "--steps")
    check_steps(args.steps, methods)
    frames = limits.frames(args.frames, "--frames")
    video_steps = limits.video_steps(args.video_steps, "--video-steps")
    limits.seed(args.seed, "--seed")
    evaluate.check_report_folder(args.output, args.overwrite)
    config = evaluate.EvalConfig(methods=methods, eps=eps, steps=args.steps, preset=args.preset, seed=args.seed,
                                 video_seeds=evaluate.video_seeds(args.video_seeds), robust=args.robust,
                                 frames=frames, video_steps=video_steps, working_size=args.working_size)
    args.device = distributed.device(args.device)  # several processes (accelerate launch): each its own GPU
    target = load(args)
    command = shlex.join([*distributed.command_prefix(), *sys.argv[1:]])
    # the images are shared out over the processes (one process: evaluate.run itself); every process
    # gets the merged report, the main one has written it
    report = distributed.evaluate(target, files, config, args.output, command=command, progress=not args.quiet,
                                  overwrite=args.overwrite)
    if not distributed.is_main():
        return 0  # the main process reports for all (see cmd_protect)
    print(f"{args.output}: {len(report.rows)} rows from {report.images_done} images in "
          f"{report.seconds / 60:.1f} min (results.csv, summary.md, plots)")
    if report.skipped:  # each was reported as it was met (logged as a warning)
        print(f"{report.images_done} of {len(files)} images evaluated; skipped: "
              f"{', '.join(name for name, _ in report.skipped)}", file=sys.stderr)
        return 1
    return 0


def add_model_options(p: argparse.ArgumentParser, seed_help: str) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"one of {', '.join(MODELS)}, a hub id or a local diffusers folder (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--seed", type=int, default=0, help=seed_help + " (default 0)")


def evaluate_default_seeds() -> int:
    from .evaluate import DEFAULT_VIDEO_SEEDS

    return DEFAULT_VIDEO_SEEDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m guard", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what loads and how long each part takes, and show the libraries' loading bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("animate", help="make a video from an image")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, help="mp4 file to write")
    add_model_options(p, "seed of the video")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames to generate, 2..{limits.MAX_FRAMES}, or 0 for the model's (the default)")
    p.add_argument("--video-steps", type=int, default=None,
                   help=f"denoising steps, 1..{limits.MAX_VIDEO_STEPS}, or 0 for the model's (the default)")
    p.add_argument("--fps", type=int, default=7, help="frame rate of the written mp4 (default 7)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("protect", help="guard an image (or every image of a folder)")
    p.add_argument("input", help="an image, or a folder of images")
    p.add_argument("-o", "--output", required=True, help="guarded PNG (or output folder for a folder input: "
                   "NAME.png per image, or NAME.SUFFIX.png where two inputs share a name)")
    p.add_argument("--method", choices=list(METHODS),
                   help="default: the method measured best on the model (guard/presets.py: freeze on the embedded "
                        "model), else vidfreeze")
    p.add_argument("--eps", type=int, default=8,
                   help=f"L-inf budget in 8-bit levels, eps/255: 1..{limits.MAX_EPS} (default 8)")
    p.add_argument("--steps", type=int, default=None, help=f"PGD steps, 0..{limits.MAX_STEPS} (default: the preset's)")
    p.add_argument("--preset", default="fast", choices=["fast", "reference"],
                   help="settings of guard/presets.py: fast (default) or the slow reference")
    p.add_argument("--step-size", type=float, default=None, help="per-step change in 8-bit levels "
                   "(default 2.5*eps/steps, at least 0.25)")
    p.add_argument("--robust", action="store_true", help="optimise through random JPEG/resize/crop (EOT)")
    p.add_argument("--no-random-start", action="store_true", help="start PGD from the image itself")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_options(p, "the protection's own seed: every randomness of the protection (random start, noise "
                      "levels, EOT, the noise control, I2VGuard's clean video)")
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("evaluate", help="measure every method at every eps on a folder of images")
    p.add_argument("images", help="a folder of images")
    p.add_argument("-o", "--output", required=True, help="report folder (results.csv, summary.md, plots)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {','.join(METHODS)} (default: all)")
    p.add_argument("--eps", default="4,8,16",
                   help="comma-separated L-inf budgets in 8-bit levels, eps/255 (default 4,8,16)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"PGD steps of every method, 0..{limits.MAX_STEPS} (default: the preset's)")
    p.add_argument("--preset", default="fast", choices=["fast", "reference"],
                   help="method settings of guard/presets.py: fast (default) or the slow reference")
    p.add_argument("--robust", action="store_true", help="protect through random JPEG/resize/crop (EOT)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames per video, 2..{limits.MAX_FRAMES}, or 0 for the model's (the default)")
    p.add_argument("--video-steps", type=int, default=None,
                   help=f"denoising steps per video, 1..{limits.MAX_VIDEO_STEPS}, or 0 for the model's (the default)")
    p.add_argument("--working-size", action="store_true",
                   help="center-crop and resize each photo to the model's working size first, and guard and judge it "
                   "there (guard's behaviour before it guarded photos at their own size; for comparison)")
    p.add_argument("--video-seeds", type=int, default=evaluate_default_seeds(),
                   help="judge every protection on videos made with this many seeds, 1000, 1001, ... "
                   f"(default {evaluate_default_seeds()}; each adds a full set of videos)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in the output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_options(p, "the protections' own seed, never one of the video seeds")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from .quiet import quiet_third_party

    quiet_third_party(verbose=args.verbose)
    try:
        return args.func(args)
    except (io.InputError, OSError) as e:  # a refusal of what the person gave, or a file that cannot be used
        if args.verbose:  # where it was refused, for whoever reads the code
            logger.exception("%s refused:", args.command)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
