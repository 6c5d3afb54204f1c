"""Seconds and GPU memory of a visit to the Space, per model, measured as a visitor meets them: `app.py` runs
as its own process (GUARD_MODELS=<the model>, preloaded, listening on 127.0.0.1) and gradio_client drives its
"/protect_and_animate" endpoint with the page's defaults (`guard.serving.page_defaults`), then visits again
with the same photo and another method (what a visitor does next; videos the app keeps are reused there).

    python benchmarks/bench_space.py --models tiny-svd,embedded --out bench_space.md
    python benchmarks/bench_space.py --models random-svd-xt,random-ltx-video,random-wan2.2-ti2v-5b \\
        --out docs/bench_space_h200.md        # on a GPU machine: the full-size random-weight models

Per model it records: the server's start (import, preload) in seconds; each visit's seconds (upload, queue,
job, the files back); the duration the app's `@spaces.GPU` function asks for (`serving.gpu_seconds` with the
same inputs, on the size `serving.gpu_size` picks for the model) and the cost table's estimate of the visit on
an H200 (`serving.visit_seconds` without ZeroGPU's slowdown and fixed part), to compare with the visit
measured here; the GPU memory after preload and at its peak, and the seconds of each part (the protection,
each video's denoising), both from the lines the server logs (`serving.TIMING_TAG`). Needs gradio,
gradio_client and torch, no network: the server is local and HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PART = re.compile(r"guard-timing part '(?P<label>[^']*)' steps=(?P<steps>\d+) seconds=(?P<seconds>[\d.]+)")
MEMORY = re.compile(r"guard-timing memory (?P<when>.*?) allocated=(?P<allocated>\d+) peak=(?P<peak>\d+)")
GiB = 2**30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log_path: Path, extra_env: dict[str, str]) -> subprocess.Popen:
    """`python app.py` serving `model` alone on 127.0.0.1:port, every model preloaded; its output to log_path."""
    env = dict(os.environ, GUARD_MODELS=model, GUARD_PRELOAD="all", GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1", **extra_env)
    log = log_path.open("w")
    return subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def connect(url: str, server: subprocess.Popen, timeout: float, log_path: Path):
    """A gradio_client Client of the server once it answers; RuntimeError if it exits or times out first."""
    from gradio_client import Client

    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}): see {log_path}\n"
                               + log_path.read_text()[-3000:])
        try:
            return Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="bench-space-"))
        except Exception:  # noqa: BLE001 - not listening yet: any connection error means "wait"
            time.sleep(1.0)
    raise RuntimeError(f"the server did not answer within {timeout:.0f} s: see {log_path}")


def log_since(log_path: Path, offset: int) -> tuple[str, int]:
    text = log_path.read_text(errors="replace")
    return text[offset:], len(text)


def parts_of(text: str) -> list[tuple[str, float]]:
    return [(m["label"], float(m["seconds"])) for m in PART.finditer(text)]


def numbers_of(result) -> dict:
    """The numbers JSON among an endpoint's outputs (the dict with "settings"), or {}."""
    outputs = result if isinstance(result, (list, tuple)) else [result]
    return next((o for o in outputs if isinstance(o, dict) and "settings" in o), {})


def visit(client, image: str, defaults: dict, method: str) -> tuple[float, dict]:
    from gradio_client import handle_file

    from guard import serving

    start = time.perf_counter()
    result = client.predict(
        image=handle_file(image), method=method, eps=defaults["eps"], steps=serving.steps_for(method),
        model=defaults["model"], seed=defaults["seed"], randomize_seed=False, frames=defaults["frames"],
        motion_bucket=defaults["motion_bucket"], video_steps=defaults["video_steps"], robust=False,
        api_name="/protect_and_animate")
    return time.perf_counter() - start, numbers_of(result)


def bench(model: str, image: str, second_method: str, timeout: float, log_dir: Path, extra_env: dict) -> dict:
    from guard import jobs, serving

    port = free_port()
    log_path = log_dir / f"server-{model}.log"
    started = time.perf_counter()
    server = start_server(model, port, log_path, extra_env)
    try:
        client = connect(f"http://127.0.0.1:{port}/", server, timeout, log_path)
        ready = time.perf_counter() - started
        defaults = serving.page_defaults(model)
        size = serving.gpu_size([model])
        row = dict(model=model, size=size, start_s=round(ready, 1))
        _, offset = log_since(log_path, 0)
        for key, method in (("first", defaults["method"]), ("second", second_method)):
            seconds, numbers = visit(client, image, defaults, method)
            text, offset = log_since(log_path, offset)
            inputs = dict(method=method, steps=serving.steps_for(method), videos=2 if method == jobs.CONTROL else 3,
                          frames=defaults["frames"], video_steps=defaults["video_steps"])
            estimate = serving.visit_seconds(model, size=size, **inputs)
            cost = serving.GPU_COST[serving.cost_key(model)]
            row[key] = dict(method=method, seconds=round(seconds, 2), asked_s=serving.gpu_seconds(model, size=size, **inputs),
                            zerogpu_estimate_s=round(estimate, 1),
                            h200_estimate_s=round((estimate - cost["fixed"]) / serving.SLOWDOWN[size], 1),
                            parts=parts_of(text), settings=numbers.get("settings", {}),
                            timings=numbers.get("timings") or numbers.get("seconds"))
        memory = {m["when"]: (int(m["allocated"]), int(m["peak"])) for m in MEMORY.finditer(log_path.read_text())}
        row["memory_after_preload"] = memory.get("after preload", (None, None))[0]
        row["peak_memory"] = max((peak for _, peak in memory.values()), default=None)
        return row
    finally:
        server.terminate()  # the server this function started, by its own handle
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def gib(value) -> str:
    return "-" if value is None else f"{value / GiB:.1f}"


def table(rows: list[dict]) -> str:
    head = ("| model | size | start s | GiB after preload | peak GiB | visit s | asked s | est. H200 s | est. ZeroGPU s "
            "| 2nd visit (method) s | asked s | parts of the visit (s) |")
    columns = head.count("|") - 1
    lines = [head, "|" + "---|" * columns]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | failed: {row['error']} |" + " |" * (columns - 2))
            continue
        first, second = row["first"], row["second"]
        parts = "; ".join(f"{label} {seconds:.1f}" for label, seconds in first["parts"]) or "-"
        lines.append(f"| {row['model']} | {row['size']} | {row['start_s']} | {gib(row['memory_after_preload'])} "
                     f"| {gib(row['peak_memory'])} | {first['seconds']:.1f} | {first['asked_s']} "
                     f"| {first['h200_estimate_s']} | {first['zerogpu_estimate_s']} "
                     f"| {second['seconds']:.1f} ({second['method']}) | {second['asked_s']} | {parts} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-svd",
                        help="comma-separated models, each served alone (names of guard.targets.MODELS or RANDOM_MODELS)")
    parser.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    parser.add_argument("--second-method", default="freeze", help="the method of the second visit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a server to start")
    parser.add_argument("--out", type=Path, help="write the table (Markdown) here, and the raw rows beside it (.json)")
    parser.add_argument("--log-dir", type=Path, default=None, help="the servers' logs (default: a temporary folder)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the server, e.g. --env GUARD_DEFAULT_STEPS=8")
    args = parser.parse_args()
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-space-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    extra_env = dict(item.split("=", 1) for item in args.env)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"{model}: starting the server (log: {log_dir / f'server-{model}.log'})", flush=True)
        try:
            rows.append(bench(model, args.image, args.second_method, args.timeout, log_dir, extra_env))
        except Exception as e:  # noqa: BLE001 - one model's failure is a row of the table, the others still run
            rows.append(dict(model=model, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
        print(json.dumps(rows[-1], default=str), flush=True)
    text = table(rows)
    import torch

    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    text = (f"Visits to app.py through gradio_client on {machine}, {time.strftime('%Y-%m-%d %H:%M')}; "
            f"photo {Path(args.image).name}\n\n{text}\n")
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
