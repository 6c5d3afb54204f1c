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
    assert "denoising" in result.stderr  # the progress bar
    assert "torchvision" not in result.stderr and "accelerate" not in result.stderr  # no set-up noise
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

    out = tmp_path / "guarded.png"
    result = run("protect", str(EXAMPLE), "-o", str(out), "--model", "tiny-svd", "--method", "photoguard",
                 "--eps", "6", "--steps", "2", "-q", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout and "SSIM" in result.stdout and "L-inf" in result.stdout
    original = PIL.Image.open(EXAMPLE).convert("RGB")
    with PIL.Image.open(out) as guarded:
        assert guarded.size == original.size  # the photo's own size, not the model's 32 x 32
        diff = np.asarray(guarded, dtype=int) - np.asarray(original, dtype=int)
    assert 0 < np.abs(diff).max() <= 6


def test_protect_folder_keeps_size_orientation_and_colour_profile(tmp_path):
    """Each photo of a folder comes back at its own size, upright as its EXIF orientation says, with its
    ICC profile, every pixel within eps of the upright 8-bit original."""
    import numpy as np
    import PIL.Image
    import PIL.ImageCms

    from guard.io import load_image

    folder = tmp_path / "photos"
    folder.mkdir()
    profile = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    photo = PIL.Image.open(EXAMPLE).convert("RGB").resize((150, 100))
    photo.save(folder / "phone.jpg", exif=exif, icc_profile=profile, quality=95)
    photo.save(folder / "plain.png")
    result = run("protect", str(folder), "-o", str(tmp_path / "out"), "--model", "tiny-svd", "--method",
                 "photoguard", "--eps", "4", "--steps", "2", "-q", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "EXIF orientation" in result.stderr  # the rotation is announced
    for name, size, icc in (("phone", (100, 150), profile), ("plain", (150, 100), None)):
        original, _ = load_image(folder / (name + (".jpg" if name == "phone" else ".png")))
        with PIL.Image.open(tmp_path / "out" / f"{name}.png") as guarded:
            assert guarded.size == original.size == size, name
            assert guarded.info.get("icc_profile") == icc, name
            diff = np.abs(np.asarray(guarded, dtype=int) - np.asarray(original, dtype=int))
        assert 0 < diff.max() <= 4, name


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

# -- refusals: every bound of the app, checked before any model loads (issue 14) ------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model starts loading: refusals must come first."""
    import guard.targets

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(guard.targets, "load_target", refuse)


def refusal(capsys, *argv) -> str:
    """Runs the CLI in this process; returns stderr after checking status 2 and a one-line message."""
    from guard.cli import main

    status = main(list(argv))
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--frames", "-1"],
     "--frames must be 0 (the model's default) or a whole number between 2 and 49, got -1"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--frames", "1"], "--frames must be 0"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--steps", "-1"], "--steps must be between 0 and 50, got -1"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--steps", "100000"], "--steps must be between 0 and 50, got 100000"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--seed", "-3"], "--seed must be between 0 and 2147483647, got -3"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--fps", "0"], "--fps must be between 1 and 60, got 0"),
    (["animate", str(EXAMPLE), "-o", "out.gif"], "name it .mp4"),
    (["protect", str(EXAMPLE), "-o", "out.png", "--eps", "0"], "--eps must be between 1 and 32, got 0"),
    (["protect", str(EXAMPLE), "-o", "out.png", "--eps", "300"], "--eps must be between 1 and 32, got 300"),
    (["protect", str(EXAMPLE), "-o", "out.png", "--steps", "-1"], "--steps must be between 0 and 200, got -1"),
    (["protect", str(EXAMPLE), "-o", "out.png", "--steps", "100000"], "--steps must be between 0 and 200, got 100000"),
    (["protect", str(EXAMPLE), "-o", "out.png", "--step-size", "9"], "--step-size must be above 0 and at most --eps"),
    (["protect", str(EXAMPLE), "-o", "out.jpg"], "name it .png"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--eps", "4,0"], "--eps must be between 1 and 32, got 0"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--frames", "-1"], "--frames must be 0"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--video-steps", "999"],
     "--video-steps must be between 0 and 50, got 999"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--methods", "vidfreeze,magic"], "--methods must be some of"),
])
def test_out_of_bounds_is_refused_before_the_model_loads(no_model, capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert message in refusal(capsys, *argv)


@pytest.mark.parametrize("command", ["animate", "protect"])
def test_unreadable_image_is_refused_before_the_model_loads(no_model, capsys, tmp_path, command):
    text = tmp_path / "photo.png"
    text.write_text("not a picture")
    eps = tmp_path / "drawing.eps"  # a format PIL could open (through Ghostscript), but not one we accept
    PIL_image().save(eps, format="EPS")
    out = str(tmp_path / ("out.mp4" if command == "animate" else "out.png"))
    for path in (text, eps, tmp_path / "missing.png"):
        err = refusal(capsys, command, str(path), "-o", out)
        assert path.name in err and ("not a readable image" in err or "no such file" in err), err


def PIL_image():
    import PIL.Image

    return PIL.Image.new("RGB", (64, 48), "teal")


def test_evaluate_refusal_of_an_existing_report_names_overwrite(no_model, capsys, tmp_path):
    (tmp_path / "results.csv").write_text("image,method\n")
    err = refusal(capsys, "evaluate", str(EXAMPLE.parent), "-o", str(tmp_path))
    assert "--overwrite" in err


def test_a_refusal_is_one_line_from_a_real_process(tmp_path):
    """The same refusal through `python -m guard`: status 2, one sentence, no traceback."""
    result = run("animate", str(EXAMPLE), "-o", str(tmp_path / "a.mp4"), "--frames", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --frames must be 0 (the model's default) or a whole number between 2 and 49, got -1"]


def test_verbose_has_help():
    from guard.cli import build_parser

    text = build_parser().format_help()
    assert "-v, --verbose" in text and "log what loads" in text


def test_noise_control_prints_no_empty_progress_bar(capsys, tmp_path):
    from guard.cli import main

    assert main(["protect", str(EXAMPLE), "-o", str(tmp_path / "g.png"), "--model", "tiny-svd", "--method", "noise",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "0it" not in captured.err and "PSNR" in captured.out


def test_huge_image_is_refused_quietly(tmp_path):
    """Above PIL's 89-megapixel warning: one sentence from guard, no DecompressionBombWarning."""
    import PIL.Image

    huge = tmp_path / "huge.png"
    PIL.Image.new("1", (9600, 9600)).save(huge)  # 92 megapixels, a small file
    result = run("protect", str(huge), "-o", str(tmp_path / "g.png"))
    assert result.returncode == 2 and "too large" in result.stderr
    assert "DecompressionBomb" not in result.stderr and "Traceback" not in result.stderr
