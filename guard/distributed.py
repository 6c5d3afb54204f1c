"""Several processes, one per GPU, through Hugging Face accelerate (`accelerate launch -m guard ...`).

    accelerate launch --num_processes 4 -m guard protect PHOTOS -o GUARDED --model svd-xt
    accelerate launch --num_processes 4 -m guard evaluate PHOTOS -o REPORT --model svd-xt

What is sharded: the images of the folder, round-robin (process k of N takes images k, k + N,
k + 2N ... of the sorted folder), each process on its own device (accelerate's `PartialState`:
cuda:LOCAL_RANK, or the CPU). For `evaluate` the unit is the image, not the (image, method, eps,
video seed) row: the rows of one image share the videos of its original (one per video seed and
"posted" condition), which a finer split would make once per process; and the image is the unit of
the summary's statistics anyway. With fewer images than processes, some processes have nothing to do.

Why the outputs are those of one process: a protection depends only on its image, its settings and
its seed (`PGDConfig.seed`: one `torch.Generator` per protection), and a video only on its image and
video seed, never on which process meets the image or after which other image. So the processes
write the PNGs, and measure the rows, that one process would, wherever one process is itself
reproducible (same device type, threads and libraries): on the CPU the PNGs are byte-identical and
results.csv is equal but for its timing column (tests/test_distributed.py, 2 processes).

How the results are gathered: through the output folder, not through collectives, so any backend
and a filesystem shared between machines will do. Each process writes its share under
`OUT/.guard-shards/` (`evaluate`: a whole report of its images, then its rows and curves as a
pickle); the main process merges them in the order of the folder, writes the one results.csv,
summary.md, per_frame.json and plots, moves the guarded images and videos into place and removes
the shard folder. A cut run leaves each process's partial report there.

Progress: one bar, on the main process, counting every process's work: each process writes its
count into the shard folder, the main one sums them whenever it advances and while it waits. The
processes wait for each other by polling files (`done<k>`) before a `wait_for_everyone` that then
returns at once: a process that finishes its share long before another never sits in a collective
barrier, which the backend would end after its timeout (30 minutes by default in torch.distributed).

Failures: an image that fails (unreadable, or an error while it is protected, e.g. out of memory)
is reported and skipped by whichever process met it; the others go on. A ValueError (a setting the
library refuses: it would fail on every image) stops the run, as it does in one process.

With one process (no launcher, or `--num_processes 1`) no shard folder is made and the commands
write what they always wrote. On a machine without GPUs, accelerate 1.15's
`accelerate launch --cpu --num_processes N` starts a single process (several need mpirun);
`accelerate launch --multi_gpu --num_processes N -m guard ... --device cpu` starts N through torchrun,
and `state` then asks for the CPU backend (gloo).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

from . import io

logger = logging.getLogger(__name__)

#: the folder under the output where the processes leave their shares (removed once merged)
SHARDS = ".guard-shards"
#: seconds between two looks at the other processes' files while waiting for them
POLL_SECONDS = 0.5

_state = None


def state(device: str = "auto"):
    """accelerate's `PartialState` (made on the first call): process_index, num_processes, device.

    `device` is the command's --device. "cpu", `accelerate launch --cpu` or a machine without CUDA ask
    for the CPU backend (gloo): without it, processes started by torchrun on a CPU would each find
    no GPU backend, believe they are alone and all do all the work."""
    global _state
    if _state is None:
        import torch
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        cpu = (str(device).startswith("cpu") or parse_flag_from_env("ACCELERATE_USE_CPU")
               or not torch.cuda.is_available())
        _state = PartialState(cpu=cpu)
    return _state


def device(requested: str = "auto") -> str:
    """The device this process runs on. With several processes, "auto" and "cuda" mean this process's
    own GPU (cuda:LOCAL_RANK), or the CPU; with one, "auto" is cuda if present, else cpu, as always.
    An explicit device ("cpu", "cuda:1") is kept."""
    s = state(requested)
    if s.num_processes > 1 and requested in ("auto", "cuda"):
        return _own_device()
    if requested == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _own_device() -> str:
    d = state().device
    return "cpu" if d.type == "cpu" else str(d)  # "cpu", never "cpu:0"


def processes() -> int:
    return state().num_processes


def is_main() -> bool:
    return state().is_main_process


def command_prefix() -> list[str]:
    """How the running command was started, for the report: `python -m guard`, or through accelerate."""
    n = processes()
    return ["python", "-m", "guard"] if n == 1 else ["accelerate", "launch", "--num_processes", str(n), "-m", "guard"]


# -- protect -----------------------------------------------------------------------------------------
def protect_all(jobs: list[tuple[Path, Path]], protect_one, folder: str | os.PathLike,
                progress: bool = True) -> list[tuple[Path, str]]:
    """Call `protect_one(input, output)` for every (input, output PNG) of `jobs`, each process its
    share; returns every failure as (input, message), in the order of `jobs`, on every process.

    An unreadable image (`io.InputError`) is skipped with a line on stderr; any other error but a
    ValueError is logged with its traceback and skipped too. With a single job every error is raised
    (a one-image command fails as it always did). `folder` holds the shard folder while processes
    gather (the output folder); `progress`: the main process's bar of images (several processes only;
    one process shows `protect_one`'s own bars)."""
    s = state()
    rank, n = s.process_index, s.num_processes
    mine = list(range(rank, len(jobs), n))
    logger.info("process %d of %d on %s: %d of %d images", rank, n, _own_device(), len(mine), len(jobs))
    shards = _begin(folder) if n > 1 else None
    bar = _Progress(shards, total=len(jobs), desc="protect", unit="image", enabled=progress and n > 1)
    failures = []  # (index in jobs, message)
    try:
        for i in mine:
            path, output = jobs[i]
            try:
                protect_one(path, output)
            except io.InputError as e:
                if len(jobs) == 1:
                    raise
                print(f"skipped: {e}", file=sys.stderr)
                failures.append((i, str(e)))
            except ValueError:
                raise
            except Exception as e:  # noqa: BLE001 - reported with its traceback; the other images go on
                if len(jobs) == 1:
                    raise
                logger.error("failed: %s: %s: %s", path, type(e).__name__, e, exc_info=True)
                failures.append((i, f"{path.name}: {type(e).__name__}: {e}"))
            bar.update(1)
        if shards is not None:
            _dump(shards / f"protect{rank}.pkl", failures)
    finally:
        bar.finish()
    if shards is not None:
        failures = sorted(f for k in range(n) for f in _load(shards / f"protect{k}.pkl", k))
        _end(shards)
    return [(jobs[i][0], message) for i, message in failures]


# -- evaluate ----------------------------------------------------------------------------------------
def evaluate(target, files: list[Path], config, out_dir: str | os.PathLike, command: str = "",
             progress: bool = True, overwrite: bool = False):
    """`guard.evaluate.run` with the images sharded over the processes; every process returns the
    merged report, and the main one writes it into `out_dir` as one process would have (results.csv
    in the folder's order, summary.md, per_frame.json, plots, images/, videos/)."""
    from . import evaluate as ev

    s = state()
    if s.num_processes == 1:
        return ev.run(target, files, config, out_dir, command=command, progress=progress, overwrite=overwrite)
    rank, n = s.process_index, s.num_processes
    out = ev.check_report_folder(out_dir, overwrite)
    start = time.perf_counter()
    shards = _begin(out)
    if s.is_main_process:
        (out / ev.RESULTS).write_text("")  # claims the folder at once, as one process's run does
    mine = files[rank::n]
    logger.info("process %d of %d on %s: %d of %d images", rank, n, _own_device(), len(mine), len(files))
    bar = _Progress(shards, total=len(files) * ev.units_per_image(config), desc="evaluate", enabled=progress)
    try:
        share = ev.run(target, mine, config, shards / f"rank{rank}", command=command, progress=False,
                       overwrite=True, bar=bar)
        _dump(shards / f"evaluate{rank}.pkl", dict(rows=share.rows, curves=share.curves, skipped=share.skipped,
                                                  images_done=share.images_done))
    finally:
        bar.finish()
    shares = [_load(shards / f"evaluate{k}.pkl", k) for k in range(n)]
    order = {path.name: i for i, path in enumerate(files)}
    # a stable sort by image keeps each image's rows in the order its process measured them
    report = ev.Report(rows=sorted((r for sh in shares for r in sh["rows"]), key=lambda r: order[r["image"]]),
                       skipped=sorted((x for sh in shares for x in sh["skipped"]), key=lambda x: order[x[0]]),
                       images_done=sum(sh["images_done"] for sh in shares), images_total=len(files))
    for path in files:
        for sh in shares:
            if path.stem in sh["curves"] and path.stem not in report.curves:
                report.curves[path.stem] = sh["curves"][path.stem]
    report.seconds = time.perf_counter() - start
    if s.is_main_process:
        _write_merged(target, report, config, out, command, shards, n)
    _end(shards)
    return report


def _write_merged(target, report, config, out: Path, command: str, shards: Path, n: int) -> None:
    import csv

    from . import evaluate as ev

    for kind in ("images", "videos"):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            for f in sorted((shards / f"rank{k}" / kind).iterdir()):
                os.replace(f, out / kind / f.name)
    with open(out / ev.RESULTS, "w", newline="") as f:  # as evaluate.run writes it
        if report.rows:
            writer = csv.DictWriter(f, fieldnames=list(report.rows[0]))
            writer.writeheader()
            writer.writerows(report.rows)
    host = ev.machine(target)
    host["device"] += f" on the main process, {n} processes in all (accelerate, {state().backend})"
    ev.write_outputs(report, config, out, command, host)


# -- gathering through the filesystem ------------------------------------------------------------------
def _begin(folder: str | os.PathLike) -> Path:
    """This run's shard folder under `folder`, emptied by the main process before any process writes."""
    s = state()
    shards = Path(folder) / SHARDS
    if s.is_main_process:
        shutil.rmtree(shards, ignore_errors=True)  # a cut run's leftovers
        shards.mkdir(parents=True)
    s.wait_for_everyone()
    return shards


def _end(shards: Path) -> None:
    """Every process has read the shares: the main process removes them."""
    s = state()
    s.wait_for_everyone()
    if s.is_main_process:
        shutil.rmtree(shards)


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)  # a reader sees the old count or the new one, never half a file


def _dump(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        pickle.dump(value, f)  # exact Python values: the merged CSV is written from them as one process would
    os.replace(partial, path)


def _load(path: Path, k: int):
    if not path.exists():
        raise RuntimeError(f"process {k} stopped before it finished its share (its error is above)")
    with open(path, "rb") as f:
        return pickle.load(f)  # written by a process of this run, moments ago


class _Progress:
    """One tqdm bar on the main process that counts the units of every process (see the module doc).
    Used as evaluate.run uses its own bar: update, set_postfix_str, a context manager; `finish`
    waits for the other processes and closes it. `shards` None: one process, a plain bar."""

    def __init__(self, shards: Path | None, total: int, desc: str, unit: str = "it", enabled: bool = True):
        from tqdm import tqdm

        s = state()
        self.shards, self.rank, self.n, self.main = shards, s.process_index, s.num_processes, s.is_main_process
        self.counts = [0] * self.n
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and self.main))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False  # `finish` closes the bar, once the other processes are done

    def update(self, n: int = 1) -> None:
        self.counts[self.rank] += n
        if self.shards is not None and not self.main:
            _write_text(self.shards / f"progress{self.rank}", str(self.counts[self.rank]))
        self.refresh()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.bar.set_postfix_str(s, refresh=refresh)  # the main process's own item

    def refresh(self) -> None:
        if not self.main:
            return
        if self.shards is not None:
            for k in range(self.n):
                if k != self.rank:
                    try:
                        self.counts[k] = int((self.shards / f"progress{k}").read_text())
                    except (FileNotFoundError, ValueError):
                        pass  # not started yet: its last count stands
        self.bar.update(sum(self.counts) - self.bar.n)

    def finish(self) -> None:
        """Mark this process done and wait, advancing the bar, until every process is; then close."""
        if self.shards is not None:
            _write_text(self.shards / f"done{self.rank}", "")
            while not all((self.shards / f"done{k}").exists() for k in range(self.n)):
                self.refresh()
                time.sleep(POLL_SECONDS)
            self.refresh()
        self.bar.close()
        if self.shards is not None:
            state().wait_for_everyone()  # everyone is here: returns at once
