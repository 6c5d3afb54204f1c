"""The SVD target on the tiny random-weight config: shapes, ranges, gradients, determinism."""

import numpy as np
import pytest
import torch


def image_tensor(target, photo):
    return target.to_tensor(target.prepare_image(photo)).requires_grad_(True)


def test_prepare_image_gives_working_resolution(tiny_svd, photo):
    image = tiny_svd.prepare_image(photo)
    assert image.size == (tiny_svd.width, tiny_svd.height) and image.mode == "RGB"


def test_conditioning_shapes_and_ranges(tiny_svd, photo):
    x = image_tensor(tiny_svd, photo)
    assert 0.0 <= x.min() and x.max() <= 1.0
    cond = tiny_svd.condition(x, generator=torch.Generator().manual_seed(0))
    assert cond["image_embeddings"].shape == (1, 1, tiny_svd.image_encoder.config.projection_dim)
    h, w = tiny_svd.height // tiny_svd.pipe.vae_scale_factor, tiny_svd.width // tiny_svd.pipe.vae_scale_factor
    assert cond["image_latents"].shape == (1, 4, h, w)
    # the VAE branch is unscaled, as in the pipeline: no noise -> exactly the latent mode
    assert torch.allclose(tiny_svd.image_latents(x), tiny_svd.condition(x, noise_aug_strength=0.0)["image_latents"])
    expected = [tiny_svd.fps - 1, tiny_svd.motion_bucket_id, tiny_svd.noise_aug_strength]
    assert cond["added_time_ids"][0].tolist() == pytest.approx(expected)


def test_clip_branch_matches_pipeline(tiny_svd, photo):
    """The differentiable CLIP branch computes what the pipeline's numpy path computes."""
    image = tiny_svd.prepare_image(photo)
    ours = tiny_svd.image_embeddings(tiny_svd.to_tensor(image))
    theirs = tiny_svd.pipe._encode_image(image, "cpu", 1, False)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_noise_levels_follow_schedule(tiny_svd):
    g = torch.Generator().manual_seed(0)
    low = tiny_svd.sample_noise_level(64, g, 0.0, 0.1)
    high = tiny_svd.sample_noise_level(64, g, 0.9, 1.0)
    smin, smax = tiny_svd._sigma_range()
    assert low.min() >= smin and high.max() <= smax * (1 + 1e-5)
    assert low.max() < high.min()


def attack_pass(target, x, seed=0):
    """One attack-shaped forward pass on random clean latents: everything a method may take a loss on.
    Returns (cond, out, x0, maps, noisy, level)."""
    g = torch.Generator().manual_seed(seed)
    cond = target.condition(x, generator=g)
    h, w = cond["image_latents"].shape[-2:]
    clean = torch.randn(1, target.num_frames, 4, h, w, generator=g)
    level = target.sample_noise_level(1, g)
    noisy = target.add_noise(clean, torch.randn(clean.shape, generator=g), level)
    with target.capture_attention() as maps:
        out, x0 = target.denoise(noisy, level, cond)
    return cond, out, x0, maps, noisy, level


@pytest.fixture(scope="module")
def step(tiny_svd, photo):
    x = image_tensor(tiny_svd, photo)
    return (x, *attack_pass(tiny_svd, x))


def test_denoiser_shapes(step, tiny_svd):
    x, cond, out, x0, maps, noisy, level = step
    assert out.shape == noisy.shape and x0.shape == noisy.shape
    assert torch.isfinite(out).all() and torch.isfinite(x0).all()


def test_attention_maps_are_temporal_and_normalised(step, tiny_svd):
    maps = step[4]
    n_layers = sum(1 for k in tiny_svd.unet.attn_processors if "temporal_transformer_blocks" in k and ".attn1." in k)
    assert len(maps) == n_layers > 0
    for m in maps:
        assert m.shape[-2:] == (tiny_svd.num_frames, tiny_svd.num_frames)
        assert torch.allclose(m.sum(-1), torch.ones(()), atol=1e-5)


def test_capture_does_not_change_output(tiny_svd, step):
    """The recording processor computes the same attention as the stock SDPA one."""
    x, cond, out, x0, maps, noisy, level = step
    with torch.no_grad():
        plain, _ = tiny_svd.denoise(noisy, level, cond)
    assert torch.allclose(plain, out, atol=1e-4)
    assert not tiny_svd.attention_store.enabled  # capture ends with its block


@pytest.mark.parametrize("quantity", ["image_embeddings", "image_latents", "denoiser", "attention"])
def test_gradients_reach_image(tiny_svd, photo, quantity):
    x = image_tensor(tiny_svd, photo)
    cond, out, x0, maps, _, _ = attack_pass(tiny_svd, x, seed=1)
    if quantity in cond:
        loss = cond[quantity].pow(2).mean()
    else:
        loss = x0.pow(2).mean() if quantity == "denoiser" else sum(m.pow(2).sum(-1).mean() for m in maps)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_same_seed_same_video(tiny_svd, photo):
    a = tiny_svd.generate(photo, seed=3)
    b = tiny_svd.generate(photo, seed=3)
    c = tiny_svd.generate(photo, seed=4)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (tiny_svd.num_frames, tiny_svd.height, tiny_svd.width, 3)
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert a.settings["seed"] == 3


def test_video_latents_match_encoder_space(tiny_svd, photo):
    video = tiny_svd.generate(photo, seed=0, return_latents=True)
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)[None].float() / 255
    with torch.no_grad():
        encoded = tiny_svd.encode_video(frames)
    assert encoded.shape == video.latents.shape


def test_checkpointing_gives_the_same_gradient(photo):
    """Checkpointed temporal and resnet blocks recompute the same maps and the same gradient."""
    from guard.targets.svd import tiny_svd

    grads = []
    for checkpointing in (False, True):
        target = tiny_svd(checkpointing=checkpointing)
        x = image_tensor(target, photo)
        _, _, x0, maps, _, _ = attack_pass(target, x)
        loss = sum(m.pow(2).sum() for m in maps) + x0.pow(2).mean()
        grads.append(torch.autograd.grad(loss, x)[0])
        assert len(maps) == 6
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
