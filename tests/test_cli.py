"""The command line: one real process per command (`python -m guard ...`, exit codes, the whole of
stderr), the rest in this process through `guard.cli.main` (the same code, without a Python start-up
per case)."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from guard.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chelsea.png"


def run(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


# -- one real process per command ---------------------------------------------------------------------
def test_animate_writes_decodable_mp4(tmp_path):
    from guard.io import read_video

    out = tmp_path / "a.mp4"
    result = run("animate", str(EXAMPLE), "-o", str(out), "--model", "tiny-svd", "--seed", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "denoising" in result.stderr  # the progress bar
    assert "torchvision" not in result.stderr and "accelerate" not in result.stderr  # no set-up noise
    frames = read_video(out)
    assert frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) >= 2


def test_protect_writes_bounded_png_and_prints_numbers(tmp_path):
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


def test_a_refusal_is_one_line_from_a_real_process(tmp_path):
    """`python -m guard evaluate` with a bad value: status 2, one sentence and nothing else on stderr."""
    result = run("evaluate", str(EXAMPLE.parent), "-o", str(tmp_path / "report"), "--frames", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --frames must be 0 (the model's default) or a whole number between 2 and 49, got -1"]
    assert not (tmp_path / "report").exists()


# -- in this process ----------------------------------------------------------------------------------
def test_animate_on_cogvideox(tmp_path, capsys):
    from guard.io import read_video

    out = tmp_path / "a.mp4"
    assert main(["animate", str(EXAMPLE), "-o", str(out), "--model", "tiny-cogvideox", "--device", "cpu", "-q"]) == 0
    assert "tiny-cogvideox, seed 0" in capsys.readouterr().out
    assert len(read_video(out)) >= 2


def refusal(capsys, *argv) -> str:
    """Runs the CLI in this process; returns stderr after checking status 2 and a one-line message."""
    status = main(list(argv))
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("args, message", [
    (["animate", "no/such/file.png", "-o", "x.mp4", "--model", "tiny-svd"], "no such file"),
    (["animate", __file__, "-o", "x.mp4", "--model", "tiny-svd"], "not a readable image"),
    (["animate", str(EXAMPLE), "-o", "x.mp4", "--model", "no-such-model"], "--model: unknown model 'no-such-model'"),
    (["animate", str(EXAMPLE), "-o", "x.mp4", "--model", "tiny-svd", "--device", "gpu"], "--device must be"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert message in refusal(capsys, *args)


def test_protect_folder_keeps_size_orientation_and_colour_profile(tmp_path, capsys):
    """Each photo of a folder comes back at its own size, upright as its EXIF orientation says, with its
    ICC profile, every pixel within eps of the upright 8-bit original."""
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
    assert main(["protect", str(folder), "-o", str(tmp_path / "out"), "--model", "tiny-svd", "--method",
                 "photoguard", "--eps", "4", "--steps", "2", "-q", "--device", "cpu"]) == 0
    assert "EXIF orientation" in capsys.readouterr().err  # the rotation is announced
    for name, size, icc in (("phone", (100, 150), profile), ("plain", (150, 100), None)):
        original, _ = load_image(folder / (name + (".jpg" if name == "phone" else ".png")))
        with PIL.Image.open(tmp_path / "out" / f"{name}.png") as guarded:
            assert guarded.size == original.size == size, name
            assert guarded.info.get("icc_profile") == icc, name
            diff = np.abs(np.asarray(guarded, dtype=int) - np.asarray(original, dtype=int))
        assert 0 < diff.max() <= 4, name


def test_protect_folder_skips_unreadable_files(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(EXAMPLE.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    status = main(["protect", str(folder), "-o", str(tmp_path / "out"), "--model", "tiny-svd",
                   "--method", "noise", "-q", "--device", "cpu"])
    assert status == 1  # something was skipped, and it says so
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    assert (tmp_path / "out" / "cat.png").is_file()
    assert (folder / "broken.jpg").read_bytes() == b"not a jpeg"  # nothing lost


def test_protect_never_overwrites_the_original(tmp_path, capsys):
    image = tmp_path / "me.png"
    image.write_bytes(EXAMPLE.read_bytes())
    assert "differ" in refusal(capsys, "protect", str(image), "-o", str(image), "--model", "tiny-svd",
                               "--method", "noise")
    assert image.read_bytes() == EXAMPLE.read_bytes()


def test_protect_folder_keeps_images_that_share_a_name(tmp_path):
    """a.jpg and a.png would both become a.png: each keeps its suffix instead; other names stay short."""
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.open(EXAMPLE).convert("RGB").save(folder / "a.jpg")
    (folder / "a.png").write_bytes(EXAMPLE.read_bytes())
    (folder / "cat.png").write_bytes(EXAMPLE.read_bytes())
    assert main(["protect", str(folder), "-o", str(tmp_path / "out"), "--model", "tiny-svd",
                 "--method", "noise", "-q", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.png", "a.png.png", "cat.png"]


@pytest.mark.parametrize("command, source, output", [("animate", EXAMPLE, "a.mp4"),
                                                     ("evaluate", EXAMPLE.parent, "report")])
def test_cogvideox_frame_counts_that_swap_the_positional_embedding_are_refused(tmp_path, capsys, command, source,
                                                                               output):
    err = refusal(capsys, command, str(source), "-o", str(tmp_path / output), "--model", "tiny-cogvideox",
                  "--frames", "9", "--device", "cpu")
    assert "17-frame videos only" in err
    assert not (tmp_path / output).exists()  # refused before anything was written


@pytest.mark.parametrize("argv, patched, error", [
    (["animate", str(EXAMPLE), "-o", "a.mp4"], "generate", ValueError),
    (["animate", str(EXAMPLE), "-o", "a.mp4"], "generate", RuntimeError),
    (["protect", str(EXAMPLE), "-o", "g.png", "--method", "photoguard", "--steps", "1"], "image_latents", ValueError),
])
def test_a_bug_is_not_a_refusal(tmp_path, monkeypatch, capsys, argv, patched, error):
    """An error guard did not raise about the person's input (here from inside the model) is a bug: it
    propagates with its traceback instead of becoming a one-line "error:"."""
    from guard.targets.svd import SVDTarget

    def broken(*args, **kwargs):
        raise error("a bug deep inside")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(SVDTarget, patched, broken)
    with pytest.raises(error, match="a bug deep inside"):
        main([*argv, "--model", "tiny-svd", "--device", "cpu", "-q"])
    assert "error:" not in capsys.readouterr().err


def test_verbose_logs_the_traceback_of_a_refusal(tmp_path, caplog, capsys):
    """-v: a refusal also logs where it was raised; without -v only the sentence."""
    argv = ["animate", str(EXAMPLE), "-o", str(tmp_path / "a.mp4"), "--frames", "-1"]
    for verbose in (False, True):
        caplog.clear()
        assert main(["-v", *argv] if verbose else argv) == 2
        assert capsys.readouterr().err.startswith("error: --frames must be 0")
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert len(tracebacks) == verbose, caplog.records
        if verbose:
            assert tracebacks[0].exc_info[0].__name__ == "InputError"


def test_help_and_checks_agree_on_zero_as_the_models_default(no_model, capsys, tmp_path):
    """animate --help offers 0 for --frames and --video-steps (the model's default), and the checks accept it."""
    with pytest.raises(SystemExit):
        main(["animate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--frames FRAMES frames to generate, 2..49, or 0 for the model's (the default)" in text
    assert "--video-steps VIDEO_STEPS denoising steps, 1..50, or 0 for the model's (the default)" in text
    with pytest.raises(AssertionError, match="a model was loaded"):  # 0 passed every check
        main(["animate", str(EXAMPLE), "-o", str(tmp_path / "a.mp4"), "--frames", "0", "--video-steps", "0"])


# -- refusals: every bound of the app, checked before any model loads ----------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model starts loading: refusals must come first."""
    import guard.targets

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(guard.targets, "load_target", refuse)


@pytest.mark.parametrize("argv, message", [
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--frames", "-1"],
     "--frames must be 0 (the model's default) or a whole number between 2 and 49, got -1"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--frames", "1"], "--frames must be 0"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--video-steps", "-1"], "--video-steps must be between 0 and 50, got -1"),
    (["animate", str(EXAMPLE), "-o", "out.mp4", "--video-steps", "100000"],
     "--video-steps must be between 0 and 50, got 100000"),
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
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--methods", "vidfreeze,magic"],
     "--methods: method must be one of freeze, vidfreeze, medusa, i2vguard, photoguard, noise, got 'magic'"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--methods", ","], "--methods is a comma-separated list"),
    (["protect", str(EXAMPLE), "-o", "out.png", "--method", "vidfreeze", "--steps", "0"],
     "--steps must be at least 1 for vidfreeze"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--methods", "noise,photoguard", "--steps", "0"],
     "--steps must be at least 1 for photoguard"),
    (["evaluate", str(EXAMPLE.parent), "-o", "report", "--seed", "1001", "--video-seeds", "2"],
     "the protection seed 1001 is also a video seed"),
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
    return PIL.Image.new("RGB", (64, 48), "teal")


def test_evaluate_refusal_of_an_existing_report_names_overwrite(no_model, capsys, tmp_path):
    (tmp_path / "results.csv").write_text("image,method\n")
    err = refusal(capsys, "evaluate", str(EXAMPLE.parent), "-o", str(tmp_path))
    assert "--overwrite" in err


def test_verbose_has_help():
    from guard.cli import build_parser

    text = build_parser().format_help()
    assert "-v, --verbose" in text and "log what loads" in text


def test_protect_runs_the_apps_chain(tiny_svd, tmp_path):
    """The guarded PNG is the one `guard.jobs.protect_photo` makes of the same job (what the app runs)."""
    from guard import jobs

    out = tmp_path / "g.png"
    assert main(["protect", str(EXAMPLE), "-o", str(out), "--model", "tiny-svd", "--method", "vidfreeze",
                 "--eps", "6", "--steps", "2", "--seed", "5", "--device", "cpu", "-q"]) == 0
    photo = PIL.Image.open(EXAMPLE).convert("RGB")
    expected = jobs.protect_photo(tiny_svd, photo, jobs.Job(method="vidfreeze", eps=6, steps=2, seed=5))
    with PIL.Image.open(out) as guarded:
        assert np.array_equal(np.asarray(guarded), np.asarray(expected.image))


def test_noise_control_prints_no_empty_progress_bar(capsys, tmp_path):
    assert main(["protect", str(EXAMPLE), "-o", str(tmp_path / "g.png"), "--model", "tiny-svd", "--method", "noise",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "0it" not in captured.err and "PSNR" in captured.out


def test_huge_image_is_refused_quietly(no_model, capsys, tmp_path):
    """Above PIL's 89-megapixel warning: one sentence from guard, no DecompressionBombWarning."""
    huge = tmp_path / "huge.png"
    PIL.Image.new("1", (9600, 9600)).save(huge)  # 92 megapixels, a small file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "too large" in refusal(capsys, "protect", str(huge), "-o", str(tmp_path / "g.png"))
    assert not [w for w in caught if issubclass(w.category, PIL.Image.DecompressionBombWarning)]
