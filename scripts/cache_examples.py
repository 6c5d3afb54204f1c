"""Store the app's result for every example image at the page's default settings (examples/cache/).

    OMP_NUM_THREADS=1 python scripts/cache_examples.py

Runs app.py's own entry point (`protect_and_animate`, the code a visitor's click runs) on each image of
examples/ with the page's defaults (`app.DEFAULTS`) on the app's first model, and stores what it
returned with `guard.example_cache` (files plus numbers, verdict included) under a fingerprint of the
model, the settings and guard's code. The app shows these when an example is clicked; after a change to
any of them it runs examples live and the tests fail until this script has been run again.

Then it times a click on each example through the app's own handler, as a visitor's click runs it
(reading the stored files, drawing the plot, building the table), and prints the seconds.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--check", action="store_true", help="only time the clicks on the stored results")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import app
    from guard import example_cache

    model = app.DEFAULTS["model"]
    if not args.check:
        results = []
        d = app.DEFAULTS
        for image in app.EXAMPLES:
            start = time.perf_counter()
            outputs = app.protect_and_animate(image, d["method"], d["eps"], d["steps"], model, d["seed"],
                                              d["randomize_seed"], d["frames"], d["motion_bucket"], d["video_steps"],
                                              d["robust"], None, progress=lambda *a, **k: None)
            seconds = time.perf_counter() - start
            guarded, _, perturbation, video_original, video_guarded, *_, numbers, _ = outputs
            results.append(dict(image=image, seconds=seconds, numbers=numbers,
                                files=dict(guarded=guarded, perturbation=perturbation, video_original=video_original,
                                           video_guarded=video_guarded)))
            print(f"{Path(image).name}: {seconds:.1f} s | {numbers['verdict']['sentence']}", flush=True)
        target = app.get_target(model)
        machine = dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                       torch=torch.__version__, device=str(target.device))
        manifest = example_cache.write(example_cache.CACHE_DIR, app.cache_fingerprint(), model, app.DEFAULTS,
                                       results, made_with="python scripts/cache_examples.py", machine=machine)
        print(f"wrote {manifest.relative_to(ROOT)} ({model}, fingerprint {app.cache_fingerprint()})")

    cache = app.EXAMPLE_CACHE = example_cache.load(app.cache_fingerprint())
    if not cache.fresh:
        print("the stored results do not match this app (model, settings or code changed): run without --check")
        return 1
    for image in app.EXAMPLES:
        start = time.perf_counter()
        outputs = app.show_example(image)
        seconds = time.perf_counter() - start
        assert outputs[0] and "stored result" in outputs[6], f"{image}: no stored result"
        print(f"click on {Path(image).name}: answered in {seconds:.3f} s (stored result)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
