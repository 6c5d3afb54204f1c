"""The command line, as a user runs it: real subprocesses, exit codes, messages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chelsea.png"


def run(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("model", ["tiny-svd", "tiny-cogvideox"])
def test_animate_writes_decodable_mp4(tmp_path, model):
    from guard.io import read_video

    out = tmp_path / "a.mp4"
    result = run("animate", str(EXAMPLE), "-o", str(out), "--model", model, "--seed", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    frames = read_video(out)
    assert frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) >= 2


@pytest.mark.parametrize("args, message", [
    (["animate", "no/such/file.png", "-o", "x.mp4", "--model", "tiny-svd"], "no such file"),
    (["animate", __file__, "-o", "x.mp4", "--model", "tiny-svd"], "not a readable image"),
    (["animate", str(EXAMPLE), "-o", "x.mp4", "--model", "no-such-model"], "unknown model"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_protect_writes_bounded_png_and_prints_numbers(tmp_path):
    import numpy as np
    import PIL.Image

    from guard.targets import load_target

    out = tmp_path / "guarded.png"
    result = run("protect", str(EXAMPLE), "-o", str(out), "--model", "tiny-svd", "--method", "photoguard",
                 "--eps", "6", "--steps", "2", "-q", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout and "SSIM" in result.stdout and "L-inf" in result.stdout
    original = load_target("tiny-svd").prepare_image(PIL.Image.open(EXAMPLE))
    diff = np.asarray(PIL.Image.open(out), dtype=int) - np.asarray(original, dtype=int)
    assert 0 < np.abs(diff).max() <= 6


def test_protect_folder_skips_unreadable_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(EXAMPLE.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = run("protect", str(folder), "-o", str(tmp_path / "out"), "--model", "tiny-svd",
                 "--method", "noise", "-q", "--device", "cpu")
    assert result.returncode == 1  # something was skipped, and it says so
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "cat.png").is_file()
    assert (folder / "broken.jpg").read_bytes() == b"not a jpeg"  # nothing lost


def test_protect_never_overwrites_the_original(tmp_path):
    image = tmp_path / "me.png"
    image.write_bytes(EXAMPLE.read_bytes())
    result = run("protect", str(image), "-o", str(image), "--model", "tiny-svd", "--method", "noise")
    assert result.returncode == 2 and "differ" in result.stderr
    assert image.read_bytes() == EXAMPLE.read_bytes()


def test_protect_folder_keeps_images_that_share_a_name(tmp_path):
    """a.jpg and a.png would both become a.png: each keeps its suffix instead; other names stay short."""
    import PIL.Image

    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.open(EXAMPLE).convert("RGB").save(folder / "a.jpg")
    (folder / "a.png").write_bytes(EXAMPLE.read_bytes())
    (folder / "cat.png").write_bytes(EXAMPLE.read_bytes())
    result = run("protect", str(folder), "-o", str(tmp_path / "out"), "--model", "tiny-svd",
                 "--method", "noise", "-q", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.png", "a.png.png", "cat.png"]


def test_cogvideox_frame_counts_that_swap_the_positional_embedding_are_refused(tmp_path):
    result = run("animate", str(EXAMPLE), "-o", str(tmp_path / "a.mp4"), "--model", "tiny-cogvideox",
                 "--frames", "9", "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "17-frame videos only" in result.stderr and len(result.stderr.strip().splitlines()) == 1
