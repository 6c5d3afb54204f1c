"""Time and peak memory of guarding a 12-megapixel photo at its own size.

    OMP_NUM_THREADS=1 python benchmarks/bench_fullsize.py --threads 1         # CPU, the embedded model
    python benchmarks/bench_fullsize.py --device cuda --model svd-xt-random --size 4000x3000,4096x3072

Guards a W x H photo (default 4000 x 3000: an example photo enlarged, with a fine texture added so that
it is not smooth; `--size` takes several) with the app's default protection (Vid-Freeze, "fast" preset,
eps 8/255), through `guard.jobs` as the app and the CLI run it, and prints:
- the protection at full size: setup seconds (`Protection.setup_seconds`: the method's clean
  references, every view kind's), seconds per PGD step (`Protection.step_seconds`: the mean of the
  steps after the first), total, and the peak memory during the protection: on the CPU the process's
  peak resident memory (VmHWM, reset just before; the loaded model is part of it, so the resident
  memory before the protection is printed too), on CUDA `torch.cuda.max_memory_allocated`;
- the same protection of the center-cropped working-size image (`Job(working_size=True)`, what
  guard did before it guarded photos at their own size): what full size adds;
- a 1-step video from the working-size image and from the full-size photo (the pipeline's own resize
  of a large photo), writing the guarded PNG and measuring PSNR / SSIM at full size (what the CLI and
  the app add).

`--model svd-xt-random` builds the SVD-XT architecture with random weights in bfloat16 as
`benchmarks/bench_gpu.py` does (timing depends on shapes, not on weight values; no hub needed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def twelve_megapixels(width: int, height: int) -> PIL.Image.Image:
    """An example photo enlarged to width x height (Lanczos), plus a fine +-6 level texture."""
    photo = PIL.Image.open(ROOT / "examples" / "coffee.png").convert("RGB").resize((width, height),
                                                                                 PIL.Image.Resampling.LANCZOS)
    noise = np.random.default_rng(0).integers(-6, 7, (height, width, 3), dtype=np.int16)
    return PIL.Image.fromarray(np.clip(np.asarray(photo, np.int16) + noise, 0, 255).astype(np.uint8))


def rss_gib(field: str = "VmRSS") -> float:
    """The process's resident memory (VmRSS) or its peak since the last reset (VmHWM), GiB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident memory
            f.write("5")


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return rss_gib("VmHWM")


def load(model: str, device: str):
    if model == "svd-xt-random":
        from bench_gpu import random_svd_xt

        return random_svd_xt(device, torch.bfloat16)
    from guard.targets import load_target

    return load_target(model, device=device)


def timed_protection(target, image, job, device):
    """`jobs.protect_photo` with its memory measured; returns (protection, numbers)."""
    from guard.jobs import protect_photo

    reset_peak(device)
    before = rss_gib()
    result = protect_photo(target, image, job)
    steps = result.step_seconds or [math.nan]  # the noise control takes none
    per_step = float(np.mean(steps[1:] or steps))  # the first step warms up
    return result, dict(steps=len(result.step_seconds), setup=result.setup_seconds, per_step=per_step,
                        first_step=steps[0], total=result.seconds, peak=peak_gib(device), rss_before=before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded (default), svd-xt-random, or any guard model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="4000x3000",
                        help="WxH of the photo, or several comma-separated (default 4000x3000, 12 megapixels)")
    parser.add_argument("--method", default="vidfreeze")
    parser.add_argument("--eps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default: the fast preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from guard import metrics
    from guard.io import save_png
    from guard.jobs import Job, VideoOptions, animate
    from guard.quiet import quiet_third_party

    quiet_third_party()
    sizes = [tuple(map(int, size.lower().split("x"))) for size in args.size.split(",")]
    t = time.perf_counter()
    target = load(args.model, args.device)
    print(f"model {args.model} on {args.device} ({target.dtype}), working size {target.width}x{target.height}, "
          f"loaded in {time.perf_counter() - t:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(args.device)}")
    unit = "GiB GPU (max allocated)" if args.device.startswith("cuda") else "GiB resident (VmHWM)"
    runs = [("working size (center crop, before)", sizes[0], True)] + [
        (f"full size {w}x{h}", (w, h), False) for w, h in sizes]
    for label, (width, height), working_size in runs:
        image = twelve_megapixels(width, height)
        job = Job(method=args.method, eps=args.eps, steps=args.steps, seed=0, working_size=working_size)
        result, n = timed_protection(target, image, job, args.device)
        print(f"{args.method} eps {args.eps}/255, {n['steps']} steps, {label}: "
              f"{result.image.width}x{result.image.height} "
              f"PNG | setup {n['setup']:.1f} s, first step {n['first_step']:.2f} s, "
              f"then {n['per_step']:.2f} s/step, total {n['total']:.1f} s | peak {n['peak']:.2f} {unit} "
              f"(resident before: {n['rss_before']:.2f} GiB)", flush=True)
    # what a full-size photo adds to a video: the pipeline's own resize (and SVD's CLIP branch, which
    # resizes the full-size photo to 224 itself); one denoising step, so the difference is the preprocessing
    seconds = {}
    for name, picture in (("working size", target.prepare_image(image)), (f"{image.width}x{image.height}", image)):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        animate(target, picture, 0, VideoOptions(video_steps=1))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - t
    print("a 1-step video from the photo at " + ", at ".join(f"{k}: {v:.1f} s" for k, v in seconds.items()))
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        path = save_png(result.image, Path(folder) / "guarded.png")
        saved, size_mb = time.perf_counter() - t, path.stat().st_size / 1e6
    t = time.perf_counter()
    numbers = metrics.imperceptibility(np.asarray(result.original), np.asarray(result.image))
    print(f"{result.image.width}x{result.image.height}: PNG written in {saved:.1f} s ({size_mb:.0f} MB); "
          f"PSNR {numbers['psnr']:.2f} dB, SSIM {numbers['ssim']:.4f}, L-inf {numbers['linf']}/255 measured in "
          f"{time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
