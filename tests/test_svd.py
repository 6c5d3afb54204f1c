"""What is particular to the SVD target, on the tiny random-weight config: guidance, the video latents'
space, its recorder against the stock processors, activation checkpointing, maps_only, float16 and
bfloat16. What every family must do is checked in tests/test_targets.py."""

import numpy as np
import pytest
import torch


def latent_channels(target):
    return target.vae.config.latent_channels


def test_guidance_is_the_targets_unless_asked(tiny_svd, photo, monkeypatch):
    """The target's guidance (the pipeline's 1 -> 3 unless a model ships its own) reaches the pipeline,
    a call's own wins, and the video's settings record what was used."""
    seen = []
    call = type(tiny_svd.pipe).__call__
    monkeypatch.setattr(type(tiny_svd.pipe), "__call__", lambda self, *a, **k: seen.append(k) or call(self, *a, **k))
    a = tiny_svd.generate(photo, seed=0, num_inference_steps=1)
    b = tiny_svd.generate(photo, seed=0, num_inference_steps=1, max_guidance_scale=1.0)
    assert (seen[0]["min_guidance_scale"], seen[0]["max_guidance_scale"]) == (1.0, 3.0) and a.settings["guidance"] == [1.0, 3.0]
    assert seen[1]["max_guidance_scale"] == 1.0 and b.settings["guidance"] == [1.0, 1.0]
    assert not np.array_equal(a.frames, b.frames)  # guidance 3 on the last frames changes them


def test_video_latents_are_in_the_pipelines_space(tiny_svd, photo):
    """encode_video puts frames where the pipeline's latents live: its `decode_latents` (which divides
    by the scaling factor) turns them into exactly what the VAE's own round trip gives."""
    video = tiny_svd.generate(photo, seed=0, num_inference_steps=1, return_latents=True)  # any latents will do
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)[None].float() / 255  # (1, F, 3, H, W)
    f = frames.shape[1]
    with torch.no_grad():
        encoded = tiny_svd.encode_video(frames)
        through_pipeline = tiny_svd.pipe.decode_latents(encoded, f, f)  # (1, 3, F, H, W)
        posterior = tiny_svd.vae.encode(frames[0] * 2 - 1).latent_dist.mode()
        round_trip = tiny_svd.vae.decode(posterior, num_frames=f).sample.permute(1, 0, 2, 3)[None]
    assert encoded.shape == video.latents.shape
    assert torch.allclose(through_pipeline, round_trip, atol=1e-5), (through_pipeline - round_trip).abs().max()


def denoiser_inputs(target, photo):
    """The photo as a tensor, its conditioning and a noisy video of latents, all from seed 0."""
    x = target.to_tensor(target.prepare_image(photo)).requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    cond = target.condition(x, generator=g)
    h, w = cond["image_latents"].shape[-2:]
    return x, cond, torch.randn(1, target.num_frames, latent_channels(target), h, w, generator=g)


def test_recorder_is_the_stock_processor(tiny_svd, photo):
    """guard's temporal recorder gives the UNet output of diffusers' stock processors, outside a capture
    (its SDPA path) and inside one (its explicit softmax)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    x, cond, noisy = denoiser_inputs(tiny_svd, photo)
    level = torch.tensor([5.0])
    with torch.no_grad():
        plain, _ = tiny_svd.denoise(noisy, level, cond)
        with tiny_svd.capture_attention() as maps:
            captured, _ = tiny_svd.denoise(noisy, level, cond)
        saved = tiny_svd.unet.attn_processors
        tiny_svd.unet.set_attn_processor(AttnProcessor2_0())
        try:
            stock, _ = tiny_svd.denoise(noisy, level, cond)
        finally:
            tiny_svd.unet.set_attn_processor(saved)
    assert len(maps) == tiny_svd.num_attention_layers
    assert torch.allclose(plain, stock, atol=1e-5), (plain - stock).abs().max()
    assert torch.allclose(captured, stock, atol=1e-4), (captured - stock).abs().max()


def test_checkpointing_gives_the_same_gradient(photo):
    """Checkpointed temporal and resnet blocks recompute the same maps and the same gradient, and a
    backward run inside the capture (recomputing the blocks) records no map twice."""
    from guard.targets.svd import tiny_svd

    grads = []
    for checkpointing in (False, True):
        target = tiny_svd(checkpointing=checkpointing)
        x, cond, noisy = denoiser_inputs(target, photo)
        with target.capture_attention() as maps:
            _, x0 = target.denoise(noisy, torch.tensor([5.0]), cond)
            loss = sum(m.pow(2).sum() for m in maps) + x0.pow(2).mean()
            grads.append(torch.autograd.grad(loss, x)[0])
            assert len(maps) == target.num_attention_layers > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_maps_only_stops_after_the_layers_read(photo, checkpointing):
    """capture_attention(layers=k) + denoise(maps_only=True): the first k maps of a full call, the same
    gradient through them, and the rest of the UNet never runs."""
    from guard.targets.svd import tiny_svd

    target = tiny_svd(checkpointing=checkpointing)
    x, cond, noisy = denoiser_inputs(target, photo)
    level = torch.tensor([5.0])
    with target.capture_attention() as full:
        target.denoise(noisy, level, cond)
    k = 2
    reference = torch.autograd.grad(sum(m.pow(2).sum() for m in full[:k]), x)[0]
    ran = []
    hook = target.unet.conv_out.register_forward_hook(lambda *a: ran.append(1))
    try:
        cond = target.condition(x, generator=torch.Generator().manual_seed(0))
        with target.capture_attention(layers=k) as maps:
            assert target.denoise(noisy, level, cond, maps_only=True) == (None, None)
            grad = torch.autograd.grad(sum(m.pow(2).sum() for m in maps), x)[0]
    finally:
        hook.remove()
    assert len(maps) == k and not ran
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, full))
    assert torch.allclose(grad, reference, rtol=1e-4, atol=1e-7)
    assert target.attention_store.maps == []  # nothing kept after the block


def test_float16_vae_encodes_in_float32_as_the_pipeline(photo):
    """A float16 VAE with force_upcast: the pipeline encodes the image in float32 (needs_upcasting);
    so do image_latents and encode_video, and the pipeline's own VAE stays float16."""
    from guard.targets.svd import tiny_svd

    target = tiny_svd(dtype=torch.float16)
    assert target.vae.dtype == torch.float16 and target.vae.config.force_upcast
    image = target.prepare_image(photo)
    pixels = target.pipe.video_processor.preprocess(image, height=target.height, width=target.width)
    with torch.no_grad():
        ours = target.image_latents(target.to_tensor(image))
        target.vae.to(torch.float32)  # what the pipeline does around _encode_vae_image
        theirs = target.pipe._encode_vae_image(pixels, "cpu", 1, False)
        target.vae.to(torch.float16)
        fp16 = target.vae.encode(pixels.half()).latent_dist.mode().float()
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert (fp16 - theirs).abs().max() > 10 * (ours - theirs).abs().max()  # float16 would be measurably off


def test_bfloat16_x0_is_float32_as_the_scheduler_upcasts(photo):
    """The Euler scheduler upcasts the sample to float32 in its step; x0 comes out float32 here too, and
    agrees with the scheduler's pred_original_sample for the same bfloat16 model output."""
    from diffusers import EulerDiscreteScheduler

    from guard.targets.svd import tiny_svd

    target = tiny_svd(dtype=torch.bfloat16)
    scheduler = EulerDiscreteScheduler.from_config(target.pipe.scheduler.config)
    scheduler.set_timesteps(3)
    x = target.to_tensor(target.prepare_image(photo))
    g = torch.Generator().manual_seed(0)
    cond = target.condition(x, generator=g)
    h, w = cond["image_latents"].shape[-2:]
    noisy = (torch.randn(1, target.num_frames, latent_channels(target), h, w, generator=g) * 3).to(torch.bfloat16)
    with torch.no_grad():
        out, x0 = target.denoise(noisy, scheduler.sigmas[1].view(1), cond)
    expected = scheduler.step(out.to(torch.bfloat16), scheduler.timesteps[1], noisy).pred_original_sample
    assert x0.dtype == expected.dtype == torch.float32
    assert torch.allclose(x0, expected, atol=0.05), (x0 - expected).abs().max()
