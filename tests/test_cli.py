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
