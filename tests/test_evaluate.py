"""`python -m guard evaluate`, in-process on the tiny random SVD: the report is complete and honest."""

import csv
import math
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from guard import cli, evaluate, io, jobs
from guard.evaluate import EvalConfig, format_interval, interval

COLUMNS = ["image", "method", "eps", "video_seed", "protect_seed", "steps", "seconds", "psnr", "ssim", "linf",
           "flow_original", "flow_guarded",
           "flow_ratio", "change_ratio", "disruption_psnr", "disruption_ssim", "posted_flow_ratio",
           "posted_disruption_ssim"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a loaded 2-core CPU, two threads made tiny generations 5-40x slower
    (measured: 0.55 s with one thread, 3-25 s with two, while other jobs ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def folder(tmp_path):
    """Two small synthetic photos and one file that claims to be a PNG but is not."""
    y, x = np.mgrid[0:40, 0:48] / 40.0
    for i in range(2):
        rgb = np.stack([np.sin(3 * x + i) * 0.5 + 0.5, np.cos(2 * y + x) * 0.5 + 0.5, (x * y + i / 3) % 1.0], -1)
        PIL.Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp_path / f"photo{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    return tmp_path


def test_evaluate_writes_rows_summary_and_plots(folder, tmp_path, monkeypatch, capsys, tiny_svd):
    out = tmp_path / "report"
    argv = ["evaluate", str(folder), "--model", "tiny-svd", "--device", "cpu", "--methods", "noise,photoguard",
            "--eps", "4,8", "--steps", "2", "--video-steps", "2", "--video-seeds", "2", "-o", str(out), "-q"]
    monkeypatch.setattr(sys, "argv", ["guard", *argv])

    assert cli.main(argv) == 1  # one file skipped, the run went on
    assert "broken.png" in capsys.readouterr().err

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * 2  # images x methods x eps x video seeds
    assert set(COLUMNS) <= set(rows[0])
    assert not [c for c in rows[0] if c.startswith(("jpeg_", "resize_"))]  # one way of posting: the app's
    assert {(r["image"], r["method"], r["eps"], r["video_seed"]) for r in rows} == {
        (f"photo{i}.png", m, e, s) for i in range(2) for m in ["noise", "photoguard"] for e in ["4", "8"]
        for s in ["1000", "1001"]}
    assert {r["protect_seed"] for r in rows} == {"0"}  # the protections' own seed, not a video seed
    for r in rows:
        for column in COLUMNS[5:]:
            assert math.isfinite(float(r[column])), (column, r)
        assert 0 < int(r["linf"]) <= int(r["eps"])  # the budget holds, and something was changed
        assert int(r["steps"]) == (0 if r["method"] == "noise" else 2)
        assert math.isnan(float(r["loss_end"])) == (r["method"] == "noise")
    # one protection per image, method and eps, judged at both seeds: the same guarded image, other videos
    for i in range(2):
        pair = [r for r in rows if r["image"] == f"photo{i}.png" and r["method"] == "photoguard" and r["eps"] == "8"]
        assert pair[0]["psnr"] == pair[1]["psnr"] and pair[0]["flow_original"] != pair[1]["flow_original"]

    summary = (out / "summary.md").read_text()
    assert "python -m guard evaluate" in summary and "--methods noise,photoguard" in summary
    assert "torch" in summary and "CPUs" in summary and "video seeds 1000, 1001" in summary
    assert "| photoguard | 8/255 | 2 x 2 |" in summary and "| noise | 4/255 | 2 x 2 |" in summary
    assert "t-interval over images" in summary
    assert "### Difference from the noise control" in summary and "| photoguard | 4/255 | 4 |" in summary
    assert "skipped: no VBench scorers here" in summary
    assert "broken.png" in summary
    assert "| posted flow ratio |" in summary and "downsized to 0.75x and saved as JPEG at quality 75" in summary
    for name in ["motion_per_frame.png", "effect_vs_eps.png"]:
        with PIL.Image.open(out / name) as image:
            assert image.width > 100
    assert len(list((out / "images").glob("*.png"))) == 8
    for png in (out / "images").glob("*.png"):
        with PIL.Image.open(png) as image:
            assert image.size == (48, 40)  # the photo's own size (tiny-svd works at 32 x 32)
    assert "photos guarded at their own size" in summary
    # the protections and the control are the app's (`guard.jobs`), with the protections' own seed
    photo = PIL.Image.open(folder / "photo0.png").convert("RGB")
    job = jobs.Job(method="photoguard", eps=8, steps=2, seed=0)
    for method, made in (("photoguard", job), ("noise", jobs.control_of(job))):
        with PIL.Image.open(out / "images" / f"photo0_{method}_eps8.png") as image:
            assert np.array_equal(np.asarray(image), np.asarray(jobs.protect_photo(tiny_svd, photo, made).image))
    # the first seed's videos only: as given and posted, of the original and of each protection
    assert len(list((out / "videos").glob("*.mp4"))) == 2 * 2 * (1 + 4)

    # a second run into the same folder is refused before it writes anything (it would corrupt the first)
    assert cli.main(argv) == 2
    assert "already holds a report" in capsys.readouterr().err


def test_working_size_guards_and_judges_the_crop(folder, tmp_path):
    """--working-size: each photo center-cropped to the model's size first, guarded and judged there."""
    out = tmp_path / "report"
    argv = ["evaluate", str(folder), "--model", "tiny-svd", "--device", "cpu", "--methods", "noise", "--eps", "4",
            "--video-steps", "1", "--video-seeds", "1", "--working-size", "-o", str(out), "-q"]
    assert cli.main(argv) == 1  # broken.png skipped
    for png in (out / "images").glob("*.png"):
        with PIL.Image.open(png) as image:
            assert image.size == (32, 32)
    assert "photos guarded at that working size" in (out / "summary.md").read_text()


def test_protection_never_sees_a_video_seed(folder, tmp_path, capsys):
    with pytest.raises(ValueError, match="protection seed 1001 is also a video seed"):
        EvalConfig(methods=["noise"], eps=[8], seed=1001, video_seeds=[1000, 1001])
    argv = ["evaluate", str(folder), "--model", "tiny-svd", "--methods", "noise", "--seed", "1000", "-o",
            str(tmp_path / "r")]
    assert cli.main(argv) == 2
    assert "also a video seed" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_config_refusals_and_units(tiny_svd, tmp_path):
    """EvalConfig checks its values as the app does (InputError, the app's bounds); a folder that holds a
    report is refused by `run` itself, before anything is written; the progress bar counts one unit per set
    of videos (the original's and each protection's) per video seed."""
    with pytest.raises(io.InputError, match="eps must be between 1 and 32, got 64"):
        EvalConfig(methods=["noise"], eps=[64])
    with pytest.raises(io.InputError, match="method must be one of .*, got 'magic'"):
        EvalConfig(methods=["noise", "magic"], eps=[8])
    config = EvalConfig(methods=["noise", "photoguard"], eps=[4, 8], video_seeds=[1000, 1001], frames=0)
    assert config.frames is None  # 0: the model's default, as everywhere
    assert evaluate.units_per_image(config) == 2 * (1 + 2 * 2)
    (tmp_path / "results.csv").write_text("image,method\n")
    with pytest.raises(io.InputError, match="already holds a report"):
        evaluate.run(tiny_svd, [], config, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_interval_is_a_t_interval_over_images():
    # two images, two seeds each: the image means 2 and 4, then t(0.975, df=1) = 12.706
    stats = interval({"a": [1.0, 3.0], "b": [4.0, 4.0]})
    assert stats["mean"] == 3.0 and stats["n"] == 2 and stats["unit"] == "images"
    assert stats["high"] - 3.0 == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), rel=1e-4)
    assert format_interval(stats) == "3 [-9.71, 15.7]"
    # one image: its seeds are the unit
    one = interval({"a": [1.0, 3.0]})
    assert one["unit"] == "seeds" and one["n"] == 2
    # an interval that excludes 0 is marked when asked; non-finite values are counted, never dropped silently
    positive = interval({"a": [1.0, 1.1], "b": [0.9, 1.0], "c": [1.0, 1.2]})
    assert format_interval(positive, mark_nonzero=True).endswith("*") and not format_interval(positive).endswith("*")
    assert format_interval(interval({"a": [1.0, float("inf")], "b": [3.0]})) == "2 [-10.7, 14.7] (1 inf)"
    assert format_interval(interval({"a": [float("nan")]})) == "- (1 nan)"


def test_bad_eps_list_is_one_line(folder, tmp_path, capsys):
    assert cli.main(["evaluate", str(folder), "--model", "tiny-svd", "--eps", "4,x", "-o", str(tmp_path / "r")]) == 2
    assert "--eps" in capsys.readouterr().err
