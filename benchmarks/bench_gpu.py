"""Speed and memory of the real architectures with random weights (no hub needed), model by model.

Models load by name through `guard.targets.load_target` (the full-size random-weight builders,
`guard.targets.RANDOM_MODELS`, in bf16 on a GPU; tiny ones, in float32, also on the CPU to check that this
script runs). Each model is set to the app's video length (`guard.serving.space_length`: GPU_COST's frames
and denoising steps for the big models), as the app loads it, and the script prints:
  - load: seconds, and the memory its modules hold on the GPU (torch.cuda.memory_allocated after load);
  - protection, per method (--methods), its fast preset run through `guard.jobs.protect_photo` as the app
    runs it, on a photo at the working size: frames attacked, attention layers read per denoiser call,
    PGD steps, seconds per step (mean of --timed-steps steps after a warm-up step), setup seconds, total
    (setup + steps x s/step, "est." when extrapolated), peak GPU memory; for CogVideoX, the transformer
    calls whose positional embedding differs from generation's (must read 0);
  - whole photo: `jobs.protect_photo` of a synthetic --photo-size photo (12 megapixels) with
    --photo-method (the app's default), saved to a PNG file: wall seconds ("est.": --timed-steps steps
    timed, the rest at the mean step) and peak memory;
  - generation: one video at the model's defaults (frames, denoising steps; a long one timed at 2 and
    --gen-steps steps, the default count extrapolated, "est.") and at the app's settings (--frames,
    --video-steps override them), through `guard.jobs.animate`; seconds and peak memory.
A model or a row that fails (out of memory, ...) prints its error and the script goes on with the next;
memory is freed between models.

    python benchmarks/bench_gpu.py                                     # every random-* model, everything
    python benchmarks/bench_gpu.py --models random-wan2.1-i2v-14b --methods vidfreeze,i2vguard \
        --skip-generation
    python benchmarks/bench_gpu.py --models random-cogvideox --skip-protection --skip-photo \
        --video-steps random-cogvideox=10
    python benchmarks/bench_gpu.py --models tiny-svd,tiny-wan           # on a CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
import traceback

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from guard import jobs  # noqa: E402
from guard.methods import METHODS  # noqa: E402
from guard.serving import space_length  # noqa: E402
from guard.targets import RANDOM_MODELS, load_target  # noqa: E402

CUDA = torch.cuda.is_available()


def sync():
    if CUDA:
        torch.cuda.synchronize()


def reset():
    """Free cached memory and start a new peak."""
    gc.collect()
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")


def allocated_gib() -> float:
    return torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")


def synthetic_photo(height: int, width: int) -> PIL.Image.Image:
    """A smooth colour pattern with some noise (deterministic)."""
    rng = np.random.default_rng(0)
    y, x = np.ogrid[0:height, 0:width]
    y, x = y / max(height, width), x / max(height, width)
    rgb = np.stack(np.broadcast_arrays(np.sin(7 * x), np.cos(5 * y + 3 * x), np.sin(9 * x * y)), -1) * 0.4 + 0.5
    rgb = rgb + rng.normal(0, 0.05, rgb.shape)
    return PIL.Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def per_model(values: str | None, cast=int) -> dict:
    """"model=value,model=value" -> {model: value}."""
    if not values:
        return {}
    pairs = [item.split("=", 1) for item in values.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"expected model=value pairs separated by commas, got {values!r}")
    return {model: cast(value) for model, value in pairs}


@contextlib.contextmanager
def layers_read(target):
    """Yields a dict filled on exit: "maps", the most attention layers recorded in one denoiser call (the
    store counts them per call), and "calls", the denoiser calls."""
    store, seen = target.attention_store, {"maps": 0, "calls": 0}
    add = store.add

    def counting(probs):
        try:
            add(probs)
        finally:
            seen["maps"] = max(seen["maps"], store.seen)

    store.add = counting
    denoisers = getattr(target, "denoisers", None) or (target.denoiser,)
    hooks = [m.register_forward_pre_hook(lambda *_: seen.__setitem__("calls", seen["calls"] + 1))
             for m in denoisers]
    try:
        yield seen
    finally:
        del store.add
        for hook in hooks:
            hook.remove()


def describe_layers(seen: dict, target) -> str:
    total = target.num_attention_layers
    if seen["maps"]:
        return f"{seen['maps']} of {total}"
    return f"output ({total} of {total})" if seen["calls"] else "none (no denoiser)"


@contextlib.contextmanager
def positional_check(target):
    """Counts CogVideoX transformer calls that substitute a sin-cos positional embedding for the learned
    one (another frame count than the model's); yields a list whose len() is that count ("-" elsewhere)."""
    embed = getattr(getattr(target, "transformer", None), "patch_embed", None)
    if embed is None or not hasattr(embed, "_get_positional_embeddings"):
        yield "-"
        return
    calls, make = [], embed._get_positional_embeddings
    embed._get_positional_embeddings = lambda *a, **k: calls.append(1) or make(*a, **k)
    try:
        yield calls
    finally:
        del embed._get_positional_embeddings


def bench_protection(target, method_name: str, timed_steps: int) -> str:
    """One row: the method's fast preset on a working-size photo, its first `timed_steps` steps timed."""
    job = jobs.Job(method=method_name, preset="fast", seed=0)
    method, config = job.build(target)
    steps, n = config.steps, min(config.steps, timed_steps)
    reset()
    photo = synthetic_photo(target.height, target.width)
    with positional_check(target) as substituted, layers_read(target) as seen:
        result = jobs.protect_photo(target, photo, jobs.Job(method=method_name, preset="fast", seed=0, steps=n))
    per_step = float(np.mean(result.step_seconds[1:] or result.step_seconds or [0.0]))  # the first step warms up
    total = result.setup_seconds + steps * per_step
    est = " est." if n < steps else ""
    frames = getattr(method, "frames", None) or target.num_frames
    swaps = substituted if isinstance(substituted, str) else len(substituted)
    return (f"| {method_name} | {frames} | {describe_layers(seen, target)} | {steps} | {per_step:.2f} | "
            f"{result.setup_seconds:.1f} | {total:.1f}{est} | {peak_gib():.1f} | {swaps} |")


def bench_whole_photo(target, method_name: str, size: tuple[int, int], timed_steps: int) -> str:
    """`protect_photo` of a synthetic photo of `size` (width, height) to a PNG file."""
    job = jobs.Job(method=method_name, preset="fast", seed=0)
    steps = job.build(target)[1].steps
    n = min(steps, timed_steps)
    photo = synthetic_photo(size[1], size[0])
    reset()
    start = time.perf_counter()
    result = jobs.protect_photo(target, photo, jobs.Job(method=method_name, preset="fast", seed=0, steps=n))
    with tempfile.TemporaryDirectory() as folder:
        result.image.save(os.path.join(folder, "guarded.png"))
    sync()
    wall = time.perf_counter() - start
    per_step = float(np.mean(result.step_seconds[1:] or result.step_seconds or [0.0]))
    total, est = wall + (steps - n) * per_step, " est." if n < steps else ""
    return (f"whole photo {size[0]}x{size[1]} -> PNG, {method_name} fast ({steps} steps): {total:.1f} s{est} "
            f"(setup {result.setup_seconds:.1f} s, {per_step:.2f} s/step), peak {peak_gib():.1f} GiB")


def time_video(target, frames: int | None, steps: int) -> tuple[float, float]:
    """Seconds and peak GiB of one video through `jobs.animate` (the app's path)."""
    reset()
    start = time.perf_counter()
    jobs.animate(target, synthetic_photo(target.height, target.width), seed=0,
                 options=jobs.VideoOptions(frames=frames, video_steps=steps))
    sync()
    return time.perf_counter() - start, peak_gib()


def bench_generation(target, frames: int, steps: int, timed: int, label: str) -> str:
    """One video of `frames` frames and `steps` denoising steps; with more steps than `timed` (>= 3), videos
    of 2 steps (LTX-Video's least) and `timed` steps are made and the rest extrapolated at their per-step
    difference (the fixed costs, conditioning and decoding, are in both)."""
    if steps <= timed or timed < 3:
        seconds, peak = time_video(target, frames, steps)
        return (f"generation at {label} ({frames} frames, {steps} steps, CFG + decode): {seconds:.1f} s, "
                f"peak {peak:.1f} GiB")
    two, _ = time_video(target, frames, 2)
    some, peak = time_video(target, frames, timed)
    per = (some - two) / (timed - 2)
    return (f"generation at {label} ({frames} frames, {steps} steps, CFG + decode): "
            f"{two + per * (steps - 2):.0f} s est. ({per:.2f} s a step, timed at 2 and {timed} steps), "
            f"peak {peak:.1f} GiB")


def attempt(label: str, row):
    """Print row() or, if it fails, the error; never raise (the next row and model still run)."""
    try:
        print(row(), flush=True)
    except Exception as e:  # noqa: BLE001 - a benchmark reports every failure and goes on
        print(f"{label}: FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
        traceback.print_exc(limit=3, file=sys.stdout)
    finally:
        reset()


def bench_model(name: str, args, device, dtype):
    reset()
    before = allocated_gib()
    start = time.perf_counter()
    target = load_target(name, device=device, dtype=dtype)
    sync()
    load_seconds = time.perf_counter() - start
    default_frames, default_steps = target.num_frames, target.num_inference_steps
    target = space_length(target, name)  # the app's video length (big models)
    frames, video_steps = args.frames.get(name), args.video_steps.get(name)
    if frames is not None:
        target.check_num_frames(frames)
        target.num_frames = frames
    if video_steps is not None:
        target.num_inference_steps = video_steps
    print(f"\n## {name}: {target.height}x{target.width}; model defaults {default_frames} frames, {default_steps} "
          f"steps; app settings {target.num_frames} frames, {target.num_inference_steps} steps", flush=True)
    print(f"loaded in {load_seconds:.0f} s; models hold {allocated_gib() - before:.1f} GiB "
          f"(torch.cuda.memory_allocated after load; checkpointing {target.checkpointing})", flush=True)
    if not args.skip_protection:
        print(f"\nprotection at the app's {target.num_frames} frames, fast presets, timed {args.timed_steps} steps:")
        print("| method | frames attacked | layers read | steps | s/step | setup s | total s | peak GiB "
              "| pos. emb. swaps |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for method_name in args.methods:
            attempt(f"{method_name}", lambda: bench_protection(target, method_name, args.timed_steps))
    if not args.skip_photo:
        attempt("whole photo", lambda: bench_whole_photo(target, args.photo_method, args.photo_size, args.timed_steps))
    if not args.skip_generation:
        attempt("generation at the model's defaults",
                lambda: bench_generation(target, default_frames, default_steps, args.gen_steps, "the model's defaults"))
        attempt("generation at the app's settings",
                lambda: bench_generation(target, target.num_frames, target.num_inference_steps, 10**6,
                                         "the app's settings"))
    # the target is freed when this function returns (the caller then empties the cache)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(RANDOM_MODELS),
                        help="comma-separated names for load_target (default: every random-* model)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods, each run with its fast preset")
    parser.add_argument("--timed-steps", type=int, default=3,
                        help="PGD steps run per protection (the first warms up; the rest extrapolated)")
    parser.add_argument("--gen-steps", type=int, default=4,
                        help="denoising steps timed for a video at the model's defaults (>= 3; videos of 2 and "
                             "this many steps, the rest extrapolated)")
    parser.add_argument("--frames", default="", help="model=frames,...: the app's frames (default: guard.serving's)")
    parser.add_argument("--video-steps", default="", help="model=steps,...: the app's denoising steps")
    parser.add_argument("--photo-size", default="4000x3000", help="WIDTHxHEIGHT of the whole-photo row")
    parser.add_argument("--photo-method", default=jobs.Job().method,
                        help="the method of the whole-photo row (default: the app's, Job's default)")
    parser.add_argument("--skip-protection", action="store_true")
    parser.add_argument("--skip-photo", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args()
    args.methods = args.methods.split(",")
    unknown = [m for m in [*args.methods, args.photo_method] if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}: use {', '.join(METHODS)}")
    args.frames, args.video_steps = per_model(args.frames), per_model(args.video_steps)
    args.photo_size = tuple(int(v) for v in args.photo_size.lower().split("x"))
    device, dtype = ("cuda", torch.bfloat16) if CUDA else ("cpu", torch.float32)
    print(f"# {torch.cuda.get_device_name() if CUDA else 'CPU'}, torch {torch.__version__}, {dtype}, random weights",
          flush=True)
    for name in args.models.split(","):
        start = time.perf_counter()
        try:
            bench_model(name, args, device, dtype)
        except Exception as e:  # noqa: BLE001 - one model failing must not stop the others
            print(f"\n## {name}: FAILED {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=4, file=sys.stdout)
        finally:
            reset()
        print(f"({name}: {time.perf_counter() - start:.0f} s in all; {allocated_gib():.1f} GiB still allocated)",
              flush=True)


if __name__ == "__main__":
    main()
