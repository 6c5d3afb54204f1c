"""The SVD target on the tiny random-weight config: shapes, ranges, gradients, determinism."""

import numpy as np
import pytest
import torch


def image_tensor(target, photo):
    return target.to_tensor(target.prepare_image(photo)).requires_grad_(True)


def test_prepare_image_gives_working_resolution(tiny_svd, photo):
    image = tiny_svd.prepare_image(photo)
    assert image.size == (tiny_svd.width, tiny_svd.height) and image.mode == "RGB"


def latent_channels(target):
    return target.vae.config.latent_channels


def test_conditioning_shapes_and_ranges(tiny_svd, photo):
    x = image_tensor(tiny_svd, photo)
    assert 0.0 <= x.min() and x.max() <= 1.0
    cond = tiny_svd.condition(x, generator=torch.Generator().manual_seed(0))
    assert cond["image_embeddings"].shape == (1, 1, tiny_svd.image_encoder.config.projection_dim)
    h, w = tiny_svd.height // tiny_svd.pipe.vae_scale_factor, tiny_svd.width // tiny_svd.pipe.vae_scale_factor
    assert cond["image_latents"].shape == (1, latent_channels(tiny_svd), h, w)
    expected = [tiny_svd.fps - 1, tiny_svd.motion_bucket_id, tiny_svd.noise_aug_strength]
    assert cond["added_time_ids"][0].tolist() == pytest.approx(expected)


def test_image_latents_are_the_pipelines(tiny_svd, photo):
    """The VAE branch is the pipeline's `_encode_vae_image` of its own preprocessing: the posterior
    mode, NOT multiplied by the scaling factor."""
    image = tiny_svd.prepare_image(photo)
    pixels = tiny_svd.pipe.video_processor.preprocess(image, height=tiny_svd.height, width=tiny_svd.width)
    with torch.no_grad():
        theirs = tiny_svd.pipe._encode_vae_image(pixels, "cpu", 1, False)
        ours = tiny_svd.image_latents(tiny_svd.to_tensor(image))
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


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
    clean = torch.randn(1, target.num_frames, latent_channels(target), h, w, generator=g)
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
    video = tiny_svd.generate(photo, seed=0, return_latents=True)
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)[None].float() / 255  # (1, F, 3, H, W)
    f = frames.shape[1]
    with torch.no_grad():
        encoded = tiny_svd.encode_video(frames)
        through_pipeline = tiny_svd.pipe.decode_latents(encoded, f, f)  # (1, 3, F, H, W)
        posterior = tiny_svd.vae.encode(frames[0] * 2 - 1).latent_dist.mode()
        round_trip = tiny_svd.vae.decode(posterior, num_frames=f).sample.permute(1, 0, 2, 3)[None]
    assert encoded.shape == video.latents.shape
    assert torch.allclose(through_pipeline, round_trip, atol=1e-5), (through_pipeline - round_trip).abs().max()


@pytest.fixture(scope="module")
def pipeline_run(tiny_svd, photo):
    """The pipeline's own numbers during a 3-step generation: the latents before each scheduler step,
    the step's output, and each UNet call's timestep and output (classifier-free guidance: a batch of
    [unconditional, conditional])."""
    pipe = tiny_svd.pipe
    steps, unet_calls = [], []

    def record_unet(module, args, kwargs, output):
        unet_calls.append((args[1] if len(args) > 1 else kwargs["timestep"], output[0].detach().clone()))

    scheduler_step = pipe.scheduler.step

    def record_step(model_output, timestep, sample, *args, **kwargs):
        out = scheduler_step(model_output, timestep, sample, *args, **kwargs)
        steps.append((sample.clone(), out))
        return out

    hook = pipe.unet.register_forward_hook(record_unet, with_kwargs=True)
    pipe.scheduler.step = record_step
    try:
        tiny_svd.generate(tiny_svd.prepare_image(photo), seed=5, num_inference_steps=3)  # what x below is
    finally:
        hook.remove()
        del pipe.scheduler.step
    return dict(steps=steps, unet=unet_calls, timesteps=pipe.scheduler.timesteps.clone(),
                sigmas=pipe.scheduler.sigmas.clone())


@pytest.mark.parametrize("i", [0, 1])
def test_denoiser_is_the_pipelines(tiny_svd, photo, pipeline_run, i):
    """At the pipeline's own step i (its latents, its sigma, its conditioning drawn from the same
    seed): our timestep and model input give its UNet's conditional output, and our x0 is its
    scheduler's pred_original_sample for that output."""
    sigma = pipeline_run["sigmas"][i].view(1)
    latents, _ = pipeline_run["steps"][i]
    timestep, unet_out = pipeline_run["unet"][i]
    assert torch.allclose(torch.as_tensor(timestep).float(), 0.25 * sigma.log(), atol=1e-6)  # the pipeline's convention
    x = tiny_svd.to_tensor(tiny_svd.prepare_image(photo))
    cond = tiny_svd.condition(x, generator=torch.Generator().manual_seed(5))  # noise augmentation: the same draw
    with torch.no_grad():
        out, x0 = tiny_svd.denoise(latents, sigma, cond)
    conditional = unet_out.chunk(2)[1]
    assert torch.allclose(out, conditional, atol=1e-4, rtol=1e-4), (out - conditional).abs().max()
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(tiny_svd.pipe.scheduler.config)
    scheduler.set_timesteps(3)
    expected = scheduler.step(out, scheduler.timesteps[i], latents).pred_original_sample
    assert x0.dtype == torch.float32
    assert torch.allclose(x0, expected, atol=1e-5, rtol=1e-5), (x0 - expected).abs().max()


def test_noising_is_the_schedulers(tiny_svd, pipeline_run):
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(pipeline_run["steps"][0][0].shape, generator=g)
    noise = torch.randn(clean.shape, generator=g)
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(tiny_svd.pipe.scheduler.config)
    scheduler.set_timesteps(3)
    for i in range(3):
        ours = tiny_svd.add_noise(clean, noise, scheduler.sigmas[i].view(1))
        theirs = scheduler.add_noise(clean, noise, scheduler.timesteps[i].view(1))
        assert torch.allclose(ours, theirs, atol=1e-5)


def denoiser_inputs(target, photo):
    """The photo as a tensor, its conditioning and a noisy video of latents, all from seed 0."""
    x = image_tensor(target, photo)
    g = torch.Generator().manual_seed(0)
    cond = target.condition(x, generator=g)
    h, w = cond["image_latents"].shape[-2:]
    return x, cond, torch.randn(1, target.num_frames, latent_channels(target), h, w, generator=g)


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
