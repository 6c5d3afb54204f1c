"""Store the page's result for every example image at the page's default settings (examples/cache/).

    OMP_NUM_THREADS=1 python scripts/cache_examples.py

Runs the chain the app's "Protect & animate" runs (`guard.jobs.protect_and_animate`, then
`guard.page.write_files`) on each image of examples/ with the page's defaults
(`guard.serving.page_defaults`) on the page's first model, and stores what it made with
`guard.example_cache` (files plus numbers, verdict included) under a fingerprint of the model, the
settings and guard's code. The app shows these when an example is clicked; after a change to any of
them it runs examples live and the tests fail until this script has been run again.

Then (and alone with --check) it times what a click on each example costs the app: reading the stored
result and drawing its table and plot.
"""

import argparse
import os
import platform
import sys
import tempfile
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
    from guard import example_cache, io, jobs, page, serving

    pool = serving.ModelPool(serving.listed_models())
    model = pool.names[0]
    defaults = serving.page_defaults(model)
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.png"))
    if not args.check:
        target, results = pool.get(model), []
        with tempfile.TemporaryDirectory() as folder:
            for image in examples:
                start = time.perf_counter()
                d = defaults
                job, seed = serving.visitor_job(d["method"], d["eps"], d["steps"], d["seed"], d["randomize_seed"],
                                                d["robust"])
                options = serving.video_options(target, d["frames"], d["motion_bucket"], d["video_steps"])
                result = jobs.protect_and_animate(target, io.load_image(image)[0], job, seed, options)
                result.numbers["settings"] = page.settings_dict(model, seed, job, options)
                files = page.write_files(result, job.eps, Path(folder), image, fps=getattr(target, "fps", 8))
                seconds = time.perf_counter() - start
                results.append(dict(image=image, seconds=seconds, numbers=result.numbers, files=files))
                print(f"{Path(image).name}: {seconds:.1f} s | {result.numbers['verdict']['sentence']}", flush=True)
            machine = dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                           torch=torch.__version__, device=str(target.device))
            fingerprint = serving.stored_examples(defaults).expected
            manifest = example_cache.write(example_cache.CACHE_DIR, fingerprint, model, defaults, results,
                                           made_with="python scripts/cache_examples.py", machine=machine)
        print(f"wrote {manifest.relative_to(ROOT)} ({model}, fingerprint {fingerprint})")

    cache = serving.stored_examples(defaults)
    if not cache.fresh:
        print("the stored results do not match this app (model, settings or code changed): run without --check")
        return 1
    for image in examples:
        start = time.perf_counter()
        entry = cache.lookup(image)
        assert entry is not None, f"{image}: no stored result"
        page.numbers_html(entry.numbers), page.motion_plot(entry.numbers["flows"])
        print(f"click on {Path(image).name}: its stored result read and drawn in {time.perf_counter() - start:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
