"""Two processes through accelerate, on the CPU: the same PNGs and the same report as one process.

accelerate 1.15's `accelerate launch --cpu --num_processes 2` starts a single process (several CPU
processes need mpirun), so these tests start two with `--multi_gpu` (torchrun), which guard runs on
the CPU backend (gloo) because of `--device cpu`. With `-v` each process logs its share: a launch that
fell back to one process doing everything fails here instead of passing for the wrong reason.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "tiny-svd", "--device", "cpu"]


def launch(args: list[str], processes: int, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m guard ARGS` (one process, no launcher), or the same under `accelerate launch`."""
    # one thread each: both runs then compute with the same kernels (and the CPU is shared)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if processes == 1:
        command = [sys.executable, "-m", "guard", *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "0", "-m", "guard", *args]  # port 0: a free one
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three small crops of the examples and one file that claims to be a PNG but is not (it sorts
    first, so process 0 meets it and must go on to its next image)."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ["chelsea", "coffee", "rocket"]:
        with PIL.Image.open(ROOT / "examples" / f"{name}.png") as image:
            image.convert("RGB").crop((0, 0, 240, 200)).resize((48, 40)).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    return folder


def check_both_processes_worked(result: subprocess.CompletedProcess, images: int) -> None:
    for k in range(2):
        assert f"process {k} of 2 on cpu" in result.stderr and f"{images // 2} of {images} images" in result.stderr, \
            result.stderr[-3000:]


def test_protect_on_two_processes_writes_the_pngs_of_one(folder, tmp_path):
    args = ["protect", str(folder), "--method", "vidfreeze", "--steps", "2", *TINY]
    one = launch([*args, "-o", str(tmp_path / "one"), "-q"], 1)
    two = launch(["-v", *args, "-o", str(tmp_path / "two")], 2)

    for result in (one, two):  # the unreadable file is reported, the other images are protected
        assert result.returncode == 1, result.stderr[-3000:]
        assert "skipped:" in result.stderr and "3 of 4 images protected; skipped: broken.png" in result.stderr
    check_both_processes_worked(two, 4)
    assert "| 4/4 " in two.stderr  # the main process's bar counted the other process's images too
    names = ["chelsea.png", "coffee.png", "rocket.png"]
    assert sorted(os.listdir(tmp_path / "one")) == sorted(os.listdir(tmp_path / "two")) == names  # no shards left
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_evaluate_on_two_processes_writes_the_report_of_one(folder, tmp_path):
    args = ["evaluate", str(folder), "--methods", "vidfreeze,noise", "--eps", "8", "--steps", "2",
            "--video-steps", "2", "--video-seeds", "1", *TINY]
    one = launch([*args, "-o", str(tmp_path / "one"), "-q"], 1)
    two = launch(["-v", *args, "-o", str(tmp_path / "two")], 2)

    for result in (one, two):
        assert result.returncode == 1, result.stderr[-3000:]  # broken.png skipped, the run went on
        assert "broken.png" in result.stderr and "3 of 4 images evaluated" in result.stderr
    check_both_processes_worked(two, 4)

    def rows(report: Path) -> tuple[list[str], list[dict]]:
        with open(report / "results.csv", newline="") as f:
            reader = csv.DictReader(f)
            return reader.fieldnames, [{k: v for k, v in r.items() if k != "seconds"} for r in reader]

    (columns_one, rows_one), (columns_two, rows_two) = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert columns_two == columns_one and "seconds" in columns_one and "posted_flow_ratio" in columns_one
    assert len(rows_one) == 3 * 2 and rows_two == rows_one  # every value but the timing, in the same order
    for name in ["per_frame.json"]:
        assert json.loads((tmp_path / "two" / name).read_text()) == json.loads((tmp_path / "one" / name).read_text())
    for kind in ["images", "videos"]:
        assert sorted(os.listdir(tmp_path / "two" / kind)) == sorted(os.listdir(tmp_path / "one" / kind))
    for png in (tmp_path / "one" / "images").iterdir():
        assert (tmp_path / "two" / "images" / png.name).read_bytes() == png.read_bytes(), png.name
    summary = (tmp_path / "two" / "summary.md").read_text()
    assert "accelerate launch --num_processes 2 -m guard -v evaluate" in summary and "2 processes in all" in summary
    assert "Run complete" in summary and "broken.png" in summary and "| vidfreeze | 8/255 | 3 x 1 |" in summary
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))  # plots; no shards left
