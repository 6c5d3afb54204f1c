"""The embedded model's training world (training/data.py): the picture decides what moves."""

import io
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.data import (  # noqa: E402
    FLOW_AT_BUCKET_255,
    HELD_OUT,
    ClipRenderer,
    bucket_of,
    render,
    source_size,
    velocity_field,
)

SIZE = (48, 64)  # a small frame keeps the test fast; the law does not depend on the size


def _pictures(textured: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    hs, ws = source_size(SIZE)
    base = torch.full((1, 3, hs, ws), 0.5)
    base[:, 0] += 0.2  # magenta-red: on the red-green axis only (yellow-blue balanced), so it moves along +x
    base[:, 2] += 0.1
    if textured:
        blocks = (torch.rand(1, 1, hs // 4 + 1, ws // 4 + 1, generator=g) - 0.5).sign()  # 4-px checks: busy
        base = base + 0.25 * blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)[..., :hs, :ws]
    return base.clamp(0, 1)


def test_flat_pictures_stay_still_and_busy_ones_move():
    speed = torch.tensor([3.0])
    flat, busy = _pictures(False), _pictures(True)
    assert velocity_field(flat, speed).abs().max() < 1e-6
    assert float(bucket_of(velocity_field(flat, speed), SIZE)) == 0
    v = velocity_field(busy, speed)
    assert v.norm(dim=1).mean() > 2.0  # fully textured: close to the clip's speed
    # red-ish -> the red-green axis is positive: moves right (+x), not up or down
    assert v[:, 0].mean() > 5 * v[:, 1].abs().mean()
    bucket = float(bucket_of(v, SIZE))
    assert abs(bucket - 255 * v.norm(dim=1).mean() / FLOW_AT_BUCKET_255) < 20


def test_render_starts_at_the_picture_and_moves_it_by_its_velocity():
    src = _pictures(True)
    v = velocity_field(src, torch.tensor([2.0]))
    video = render(src, v, num_frames=4, size=SIZE)  # (1, 4, 3, H, W)
    hs, ws = src.shape[-2:]
    top, left = (hs - SIZE[0]) // 2, (ws - SIZE[1]) // 2
    assert torch.allclose(video[0, 0], src[0, :, top : top + SIZE[0], left : left + SIZE[1]], atol=1e-5)
    still = render(src, torch.zeros_like(v), num_frames=4, size=SIZE)
    assert torch.allclose(still[0, 3], still[0, 0])
    # the content at frame 3 is the picture shifted by about 3 v to the right: compare with a shift
    shift = int(round(3 * float(v[0, 0].mean())))
    moved = src[0, :, top : top + SIZE[0], left - shift : left - shift + SIZE[1]]
    assert (video[0, 3] - moved).abs().mean() < (video[0, 3] - video[0, 0]).abs().mean() / 2


def test_renderer_is_seeded_and_has_still_clips():
    bank = torch.rand(4, 3, 80, 100)
    a, ba = ClipRenderer(bank, SIZE, num_textures=4, seed=3)(16, 4)
    b, bb = ClipRenderer(bank, SIZE, num_textures=4, seed=3)(16, 4)
    assert torch.equal(a, b) and torch.equal(ba, bb)
    assert a.shape == (16, 4, 3, *SIZE) and a.min() >= -1 and a.max() <= 1
    assert (ba == 0).any() and (ba > 0).any()


def test_held_out_pictures_are_not_training_pictures():
    from training.data import load_pictures

    assert not set(load_pictures()) & set(HELD_OUT)
    examples = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "examples"))}
    assert examples - {"SOURCES", "cache"} <= set(HELD_OUT)


def test_photo_share_draws_photos_or_textures_as_asked():
    bank = torch.full((3, 3, 80, 100), 0.5)  # photos: flat grey; procedural textures never are flat
    for share, photos in ((1.0, True), (0.0, False)):
        r = ClipRenderer(bank, SIZE, num_textures=4, seed=1, photo_share=share)
        video, _ = r(16, 2)
        flat = video.flatten(3).std(3).flatten(1).amax(1) < 1e-3  # tone and tint change a flat picture, not its flatness
        assert bool(flat.all()) == photos and bool(flat.any()) == photos
    # within the photos, and within the textures, every tile is drawn alike
    idx = ClipRenderer(bank, SIZE, num_textures=4, seed=1, photo_share=0.5).tile_indices(70000)
    share = torch.bincount(idx, minlength=7).float() / len(idx)
    assert torch.allclose(share[:3], torch.full((3,), 0.5 / 3), atol=0.01)
    assert torch.allclose(share[3:], torch.full((4,), 0.5 / 4), atol=0.01)


def test_picture_bank_has_five_views_per_picture():
    from training.data import picture_bank

    pictures = {"a": (torch.rand(120, 160, 3) * 255).to(torch.uint8).numpy()}
    bank = picture_bank(pictures, SIZE, "cpu")
    assert bank.shape[0] == 5 and bank.min() >= 0 and bank.max() <= 1
    # the last view: the whole picture at half size in the middle, mirrored out to the edges
    th, tw = bank.shape[-2:]
    assert torch.allclose(bank[4, :, : th // 4].flip(1), bank[4, :, th // 4 + 1 : th // 2 + 1], atol=1e-6)


def test_extra_pictures_travel_as_small_jpegs_and_read_back(tmp_path):
    from training.data import read_pictures
    from training.pictures import MAX_SIDE, decode, encode

    grey = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    assert decode("x/portrait.npy", _npy_bytes(grey)).shape == (100, 200, 3)  # grey -> 3 channels
    big = np.random.default_rng(0).integers(0, 256, (1000, 2000, 3), dtype=np.uint8)
    jpeg = encode(big)
    assert jpeg.ndim == 1 and jpeg.dtype == np.uint8
    np.savez(tmp_path / "p.npz", extra_photo=jpeg)
    pictures = read_pictures(str(tmp_path / "p.npz"))
    assert pictures["extra_photo"].shape == (MAX_SIDE // 2, MAX_SIDE, 3)  # long side capped, aspect kept


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_sharp_views_are_prepared_photos_and_reach_frame_zero():
    import PIL.Image

    from training.data import picture_bank, sharp_views

    g = np.random.default_rng(0)
    pictures = {"a": g.integers(0, 256, (150, 240, 3), dtype=np.uint8), "b": g.integers(0, 256, (200, 160, 3), dtype=np.uint8)}
    views = sharp_views(pictures, SIZE)
    hs, ws = source_size(SIZE)
    assert views.shape == (12, 3, hs, ws) and views.dtype == torch.uint8
    # the first view of a picture, seen through the frame: the picture cropped to the frame's aspect and
    # resized with Lanczos, as guard prepares a photo (to within rounding)
    img = PIL.Image.fromarray(pictures["a"])
    w = round(150 * SIZE[1] / SIZE[0])
    prepared = np.asarray(img.crop(((240 - w) // 2, 0, (240 - w) // 2 + w, 150)).resize(SIZE[::-1], PIL.Image.Resampling.LANCZOS))
    top, left = (hs - SIZE[0]) // 2, (ws - SIZE[1]) // 2
    frame = views[0, :, top : top + SIZE[0], left : left + SIZE[1]].permute(1, 2, 0).numpy().astype(float)
    assert np.abs(frame - prepared).mean() < 2  # 0.38 here; shifted by one pixel: 22. Random pixels: the harshest case for a sub-pixel shift
    # a renderer that draws them: frame 0 keeps the views' fine detail, which the bank's crops blur
    bank = picture_bank(pictures, SIZE, "cpu")
    detail = []
    for share in (0.0, 1.0):
        r = ClipRenderer(bank, SIZE, num_textures=1, seed=0, photo_share=1.0, views=views, sharp_share=share, still=1.0)
        f = r(32, 1)[0][:, 0]
        detail.append((f[..., 1:, :] - f[..., :-1, :]).abs().mean().item())
    assert detail[1] > 1.2 * detail[0]  # 1.34 on these random pixels; 1.0 if the views were ignored


def test_validation_photos_are_training_photos_not_held_out():
    # settings are chosen on these (training/evaluate.py --images validation), so they must never be held-out images
    from training.data import load_pictures
    from training.evaluate import EXAMPLES, VALIDATION

    assert set(VALIDATION) <= set(load_pictures())
    assert not set(VALIDATION) & (set(HELD_OUT) | set(EXAMPLES))


def _assert_refused(script: str, args: list, message: str, capsys, monkeypatch) -> None:
    """training/SCRIPT's main() with the command line ARGS exits with argparse's status 2 and MESSAGE on
    stderr (any other exception, a traceback on the command line, fails pytest.raises), before any
    work: a script that goes on fails here at once instead of training or evaluating."""
    import training.evaluate
    import training.train

    def went_on(*_, **__):
        raise AssertionError(f"{script} {' '.join(args)} went on past its checks")

    monkeypatch.setattr(training.train, "Accelerator", went_on)  # the first work of each script
    monkeypatch.setattr(training.evaluate, "load_target", went_on)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as refused:
        {"train.py": training.train, "evaluate.py": training.evaluate}[script].main()
    assert refused.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--guidance", "2,1"], "--guidance MIN,MAX must have MIN <= MAX"),
    (["--guidance", "2"], "--guidance takes two numbers, MIN,MAX, got '2'"),
])
def test_evaluate_refuses_bad_settings_in_one_line(args, message, capsys, monkeypatch):
    _assert_refused("evaluate.py", args, message, capsys, monkeypatch)


@pytest.mark.parametrize("args, message", [
    (["--latent-noise", "-0.1"], "--latent-noise is a standard deviation: it cannot be negative"),
    (["--first-frame", "-1"], "--first-frame is a loss weight: it cannot be negative"),
    (["--vae-first-frame", "-2"], "--vae-first-frame is a loss weight: it cannot be negative"),
    (["--retrain-vae"], "--retrain-vae trains the VAE of --init"),
    (["--init", "x", "--latent-noise", "0.1"], "--latent-noise trains the VAE's decoder, but --init's VAE is taken as trained"),
    (["--init", "x", "--vae-first-frame", "2"], "--vae-first-frame trains the VAE's decoder, but --init's VAE is taken as trained"),
    (["--init", "x", "--still-worst", "10"], "--still-worst trains the VAE's decoder, but --init's VAE is taken as trained"),
])
def test_train_refuses_bad_settings_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    _assert_refused("train.py", ["--work", str(tmp_path / "w"), *args], message, capsys, monkeypatch)
    assert not (tmp_path / "w").exists()  # refused before anything is written


def test_the_train_command_refuses_in_one_line(tmp_path):
    """The same refusal from `python training/train.py`, a process of its own: the script's entry point."""
    import subprocess

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train.py")
    done = subprocess.run([sys.executable, path, "--work", str(tmp_path / "w"), "--first-frame", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--first-frame is a loss weight: it cannot be negative" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "w").exists()
