"""train.py on two processes: both resume an --init at its step, and both stop and save when the main
process says, so that neither waits for ever in a collective that the other never joins.

`accelerate launch --multi_gpu` with ACCELERATE_USE_CPU=1 starts two gloo processes on the CPU (as in
test_distributed.py). They run this file, which runs train.py's main() on a tiny model and two random
pictures (what is checked here, the steps and the saves, does not depend on the size) and, with
FAST_CLOCK set, gives the main process a clock a million times as fast: its saves and its deadline
come at every look, while the other process's own clock would call for none.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from training.model import ModelConfig  # noqa: E402

# 32x32 frames, 2-3 per clip, 2x VAE, two UNet levels of 32 channels: a step takes well under a second
TINY = dict(height=32, width=32, num_frames=2, train_frames=(2, 3), latent_channels=4, vae_channels=(32, 32),
            unet_channels=(32, 32), unet_heads=(1, 1), unet_attention_levels=(0, 1), clip_hidden=32, clip_layers=1,
            clip_heads=1, clip_projection=32, time_embed_dim=8)
INIT_STEP = 40  # the UNet step of the --init
SMALL = ["--batch", "2", "--vae-batch", "4"]  # one clip per process and step


def pictures(path=None) -> dict:
    """Two random pictures in place of the installed packages' (read_pictures)."""
    g = np.random.default_rng(0)
    return {name: g.integers(0, 256, (60, 80, 3), dtype=np.uint8) for name in ("a", "b")}


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    """A compact export of a tiny model at UNet step INIT_STEP, as train.py --export writes it."""
    import torch

    from training.model import build_image_encoder, build_unet, build_vae
    from training.train import export_compact

    cfg = ModelConfig(**TINY)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("init") / "export"
    export_compact(str(folder), cfg, build_vae(cfg), build_unet(cfg), build_image_encoder(cfg),
                   {"unet_step": INIT_STEP, "vae_steps": 10, "scaling_factor": 0.5})
    return folder


def train_on_two(args: list[str], work: Path, fast_clock: bool = False, timeout: int = 120) -> str:
    """train.py ARGS on two processes, with --work WORK; returns its log. A run that fails, or hangs
    past TIMEOUT seconds, fails the test."""
    # the processes end themselves at TIMEOUT: torchrun starts each in a session of its own
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1",
               TRAIN_TIMEOUT=str(timeout))
    if fast_clock:
        env["FAST_CLOCK"] = "1"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               __file__, "--work", str(work), *SMALL, *args]  # port 0: a free one
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                          timeout=timeout + 60)
    if "SIGALRM" in done.stdout:
        pytest.fail(f"train.py on two processes hung (ended after {timeout} s):\n{done.stdout[-3000:]}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 process(es) on cpu" in done.stdout, done.stdout[-3000:]  # not two processes each alone
    return (work / "log.txt").read_text()


def test_both_processes_resume_an_init_at_its_step_and_save_together(init, tmp_path):
    # Two VAE steps, then two UNet steps on from the init's step. A process that started the UNet at
    # step 0 would still be training (at another learning rate) when the other gathers for its final
    # save. Each process's own clock would ask the main one alone to save, at every step of both stages.
    log = train_on_two(["--init", str(init), "--retrain-vae", "--vae-steps", "2", "--unet-steps", str(INIT_STEP + 2),
                        "--save-every", "60", "--export", str(tmp_path / "e")], tmp_path / "w", fast_clock=True)
    assert f"unet step {INIT_STEP}; fresh optimizer" in log
    assert f"saved step {INIT_STEP + 1} " in log and f"saved step {INIT_STEP + 2} " in log, log
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    assert meta["unet_step"] == INIT_STEP + 2 and meta["final"] and meta["vae_steps"] == 10 + 2


@pytest.mark.parametrize("stage", ["vae", "unet"])
def test_both_processes_stop_at_the_main_processs_deadline(init, tmp_path, stage):
    # --max-minutes 1: the main process's deadline has passed at its first look, the other's has not
    args = ["--init", str(init), "--unet-steps", "1000000", "--max-minutes", "1", "--export", str(tmp_path / "e")]
    if stage == "vae":
        args += ["--retrain-vae", "--vae-steps", "1000000"]
    log = train_on_two(args, tmp_path / "w", fast_clock=True)
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    assert meta["unet_step"] == INIT_STEP and not meta.get("final")
    if stage == "vae":
        assert "stopped in the VAE stage" in log and "exported the VAE at vae step 10" in log, log
    else:
        assert f"saved step {INIT_STEP} " in log, log


if __name__ == "__main__":  # one of the processes: train.py on the tiny model
    import training.train as train

    signal.alarm(int(os.environ["TRAIN_TIMEOUT"]))  # a hung process ends (SIGALRM), rather than waiting for ever
    train.ModelConfig = functools.partial(ModelConfig, **TINY)
    train.read_pictures = pictures
    if os.environ.get("FAST_CLOCK") and os.environ["RANK"] == "0":
        zero = time.time()
        train.time = types.SimpleNamespace(time=lambda: zero + 1e6 * (time.time() - zero))
    train.main()
