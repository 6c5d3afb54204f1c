"""Seconds a visitor waits for the Space's default run ("Protect & animate": the protection, then the videos
of the original, of the guarded photo and of the noise control, judged), through the code the app's entry
point runs (`guard.jobs.protect_and_animate`, `guard.page.write_files`) with the page's defaults
(`guard.serving.page_defaults`).

    python benchmarks/bench_app.py [--model embedded] [--image examples/chelsea.png] [--steps N]
                                   [--method M] [--second-method vidfreeze]

Prints the seconds of each part (imports, model load, protection, the control, each video, metrics and
files) and the total, with the machine's load average (timings on a shared CPU are inflated). Then a
second visit on the same photo and seed with another method (`--second-method`), through the same video
cache as the app (`guard.videocache`): its original's and control's videos are found, only the guarded
photo's is made. Gradio's own overhead (upload, queue, sending the files) is not in it. Target for the
embedded model on a 2-core CPU: a visit in at most 45 s.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD_BEFORE = " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    has_embedded = (ROOT / "guard" / "models" / "embedded" / "model_index.json").is_file()
    parser.add_argument("--model", default="embedded" if has_embedded else "tiny-svd",
                        help="model to time (default: embedded, or tiny-svd where it is not installed)")
    parser.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    parser.add_argument("--method", help="default: the page's for the model (guard.serving.page_defaults)")
    parser.add_argument("--second-method", default="vidfreeze",
                        help="method of a second visit on the same photo, with the app's video cache (default: vidfreeze)")
    parser.add_argument("--steps", type=int, default=None, help="protection steps (default: the page's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; on a shared, loaded CPU 1 can be several "
                             "times faster than 2, as OpenMP threads then wait on each other)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from guard import io, jobs, page, serving, videocache

    imported = time.perf_counter()
    pool = serving.ModelPool([args.model])
    target = pool.get(args.model)
    loaded = time.perf_counter()
    defaults = serving.page_defaults(args.model)

    cache = videocache.VideoCache()  # the app's: a second visit on the same photo makes only its guarded video

    def visit(method: str):
        """One press of "Protect & animate" on the image with `method`: (result, job, steps, parts, seconds)."""
        steps = serving.steps_for(method) if args.steps is None else args.steps
        marks = []  # (part, when it began)

        def mark(part, *_):
            """Note that `part` began now (called by `on_video` as a video begins, and as each step ends)."""
            if not marks or marks[-1][0] != part:
                marks.append((part, time.perf_counter()))

        run_start = time.perf_counter()
        picture, _ = io.load_image(args.image)
        job, seed = serving.visitor_job(method, defaults["eps"], steps, args.seed, False, False)
        options = serving.video_options(target, defaults["frames"], defaults["motion_bucket"], defaults["video_steps"])
        result = jobs.protect_and_animate(target, picture, job, seed, options,
                                          on_step=lambda *a: mark(f"protection ({job.method}, {steps} steps)"),
                                          on_video=lambda role: mark(f"video of the {role} photo"),
                                          cache=cache)
        mark("metrics, files")
        with tempfile.TemporaryDirectory() as folder:
            page.write_files(result, job.eps, Path(folder), args.image, fps=getattr(target, "fps", 8))
            page.motion_plot(result.numbers["flows"])
        run_end = time.perf_counter()
        # each part lasts from its first report to the next part's: a video's from when it begins (on_video
        # is asked for its callback then), so a video from the cache lasts the lookup alone; the control (a
        # noise draw, no steps) and the protection's setup fall into the part before the first report after them
        parts = [("decoding the upload, checks, the protection's setup", marks[0][1] - run_start)]
        for (part, t0), (_, t1) in zip(marks, marks[1:] + [("end", run_end)]):
            parts.append((part, t1 - t0))
        return result, job, steps, parts, run_end - run_start

    args.method = args.method or defaults["method"]
    result, job, steps, parts, seconds = visit(args.method)
    first_end = time.perf_counter()
    second = visit(args.second_method)
    end = time.perf_counter()

    print(f"model {args.model} ({target.height}x{target.width}, {target.num_frames} frames, "
          f"{target.num_inference_steps} denoising steps), method {args.method}, {steps} protection steps, "
          f"eps {job.eps}/255, image {Path(args.image).name}; setup {result.protection.setup_seconds:.2f} s, "
          f"steps {sum(result.protection.step_seconds):.2f} s")
    print(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device {target.device}, "
          f"load average before/after: {LOAD_BEFORE} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, part_seconds in [("import torch and guard", imported - start), (f"load {args.model}", loaded - imported)]:
        print(f"  {name:<55} {part_seconds:7.2f} s")
    for name, part_seconds in parts:
        print(f"  {name:<55} {part_seconds:7.2f} s")
    print(f"  {'visitor wait (run only, model already loaded)':<55} {seconds:7.2f} s")
    print(f"  {'total (import + load + run)':<55} {first_end - start:7.2f} s")
    print(f"verdict: {result.numbers['verdict']['sentence']}")
    result, job, steps, parts, seconds = second
    print(f"second visit, the same photo and seed, method {args.second_method}, {steps} protection steps "
          f"(the original's and the control's videos from the cache: {cache.hits} found, {len(cache)} stored, "
          f"{cache.nbytes / 1e6:.1f} MB):")
    for name, part_seconds in parts:
        print(f"  {name:<55} {part_seconds:7.2f} s")
    print(f"  {'visitor wait (second visit)':<55} {seconds:7.2f} s")
    print(f"  {'total (import + load + both visits)':<55} {end - start:7.2f} s")
    print(f"verdict: {result.numbers['verdict']['sentence']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
