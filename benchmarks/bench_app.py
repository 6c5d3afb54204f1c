"""Seconds a visitor waits for the Space's default run: protect + videos of the original, of the
guarded image and of the noise control (for the verdict), through app.py's own entry point (`protect_and_animate`) with the page's defaults.

    python benchmarks/bench_app.py [--model embedded] [--image examples/chelsea.png] [--steps N]
    python benchmarks/bench_app.py --weights DIR   # a diffusers folder timed in place of the embedded model

Prints the seconds of each part (model load, protection, each video, metrics and files) and the
total, with the machine's load average (timings on a shared CPU are inflated). Target for the
embedded model on a 2-core CPU: total <= 60 s.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class PhaseClock:
    """A stand-in for gr.Progress that notes when each phase (the text before ':') first reports."""

    def __init__(self):
        self.marks: list[tuple[str, float]] = []

    def __call__(self, progress=None, desc=None, total=None, unit="steps", _tqdm=None):
        phase = (desc or "").split(":")[0]
        if not self.marks or self.marks[-1][0] != phase:
            self.marks.append((phase, time.perf_counter()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    has_embedded = (ROOT / "guard" / "models" / "embedded" / "model_index.json").is_file()
    parser.add_argument("--model", default="embedded" if has_embedded else "tiny-svd",
                        help="model to time (default: embedded, or tiny-svd while it is not installed)")
    parser.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    parser.add_argument("--method", default="vidfreeze")
    parser.add_argument("--steps", type=int, default=None, help="protection steps (default: the page's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None,
                        help="a diffusers folder to time as `embedded` (e.g. the embedded architecture with "
                             "random weights, before the trained one is installed: same cost)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; on a shared, loaded CPU 1 can be several "
                             "times faster than 2, as OpenMP threads then wait on each other)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.weights:
        import guard.targets

        weights = Path(args.weights).resolve()
        guard.targets.MODELS["embedded"] = str(weights)
        guard.targets.EMBEDDED_PATH = weights  # read by app.py at import
        args.model, has_embedded = "embedded", True
        print(f"note: timing {weights} as the embedded model")
    if args.model != "embedded":
        print(f"note: timing {args.model}, not the embedded model"
              + ("" if has_embedded else " (guard/models/embedded is not installed yet)"))

    os.environ["GUARD_MODELS"] = args.model
    os.environ["GUARD_PRELOAD"] = "none"  # load inside the timed part below
    start = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import app

    imported = time.perf_counter()
    target = app.get_target(args.model)
    loaded = time.perf_counter()
    steps = app.default_steps(args.method) if args.steps is None else args.steps

    clock = PhaseClock()
    run_start = time.perf_counter()
    outputs = app.protect_and_animate(args.image, args.method, app.DEFAULT_EPS, steps, args.model, args.seed, False,
                                      0, 127, 0, False, progress=clock)
    run_end = time.perf_counter()

    # parts of the run: each phase lasts from its first progress report to the next phase's; the last
    # one (the guarded video) also holds the metrics, the plot and the files written after it
    table = [("import app (gradio, torch, guard)", imported - start), (f"load {args.model}", loaded - imported),
             ("checks, decoding the upload", clock.marks[0][1] - run_start)]
    ends = [t for _, t in clock.marks[1:]] + [run_end]
    for (phase, t0), t1 in zip(clock.marks, ends):
        table.append((phase, t1 - t0))
    table[-1] = (table[-1][0] + " + metrics, plot, files", table[-1][1])

    frames = target.num_frames
    print(f"model {args.model} ({target.height}x{target.width}, {frames} frames, {target.num_inference_steps} "
          f"denoising steps), method {args.method}, {steps} protection steps, eps {app.DEFAULT_EPS}/255, "
          f"image {Path(args.image).name}")
    print(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device {app.DEVICE}, "
          f"load average before/after: {LOAD_BEFORE} / {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    for name, seconds in table:
        print(f"  {name:<55} {seconds:7.2f} s")
    print(f"  {'visitor wait (run only, model already loaded)':<55} {run_end - run_start:7.2f} s")
    print(f"  {'total (import + load + run)':<55} {run_end - start:7.2f} s")
    print(f"seed used {outputs[8]}; files in {Path(outputs[0]).parent}")
    return 0


LOAD_BEFORE = " ".join(f"{x:.2f}" for x in os.getloadavg())

if __name__ == "__main__":
    sys.exit(main())
