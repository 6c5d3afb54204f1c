"""What is particular to the Wan family (guard/targets/wan.py), on its tiny builders; the contract every
family meets is tests/test_targets.py. Here: the [noisy | mask | image] channel order and the first-frame
mask, the per-token timesteps of TI2V, the expert at a noise level, the causal VAE that lets one cond serve
a shorter video (and the RoPE grid of that video), the CLIP preprocessing, and the recording processor
being diffusers' own."""

import contextlib
import copy

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from guard.targets import load_target
from guard.targets.base import normalize_to_neg_one_to_one, with_photo

TINY_WAN = ["tiny-wan", "tiny-wan-moe", "tiny-wan-ti2v"]


@pytest.fixture(scope="module", params=TINY_WAN)
def target(request):
    return load_target(request.param)


@pytest.fixture(scope="module")
def image(target, photo):
    return target.to_tensor(target.prepare_image(photo))


@pytest.fixture(scope="module")
def cond(target, image):
    with torch.no_grad():
        return target.condition(image)


def transformer_inputs(target, noisy, level, cond) -> dict:
    """The keyword arguments `denoise` hands the transformer."""
    calls = []
    handles = [m.register_forward_pre_hook(lambda m, a, k: calls.append(k), with_kwargs=True) for m in target.denoisers]
    try:
        with torch.no_grad():
            target.denoise(noisy, level, cond)
    finally:
        for handle in handles:
            handle.remove()
    (inputs,) = calls
    return inputs


def test_channels_are_noisy_mask_image(target, image, cond):
    """Wan 2.1 / A14B: the transformer gets [noisy latents (C) | mask (4) | latents of [image, zeros...] (C)]
    on channels; the mask is one on latent frame 0 (the known first video frame, 4 channels for the 4 frames
    latent frame 0 stands for) and zero on every later latent frame; the image block is the VAE latent of
    the video [image, zeros x (F - 1)], normalised, whose frame 0 is the latent of the image alone."""
    if target.expand_timesteps:
        pytest.skip("TI2V replaces the first latent frame instead (test_ti2v_replaces_the_first_frame)")
    c = target.vae.config.z_dim
    f = target.latent_frames(target.num_frames)
    noisy = torch.randn(1, f, c, target.height // 8, target.width // 8, generator=torch.Generator().manual_seed(0))
    level = target.noise_levels(3)[:1]
    hidden = transformer_inputs(target, noisy, level, cond)["hidden_states"]  # (1, 2C + 4, F', h, w)
    assert hidden.shape[1] == 2 * c + 4
    assert torch.equal(hidden[:, :c], noisy.transpose(1, 2))
    mask = hidden[:, c:c + 4]
    assert (mask[:, :, 0] == 1).all() and (mask[:, :, 1:] == 0).all()
    with torch.no_grad():
        x = normalize_to_neg_one_to_one(image).unsqueeze(2)
        video = torch.cat([x, torch.zeros(1, 3, target.num_frames - 1, target.height, target.width)], dim=2)
        config = target.vae.config
        latents = target.vae.encode(video).latent_dist.mode()
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1)
        expected = (latents - mean) / std
        assert torch.allclose(hidden[:, c + 4:], expected, atol=1e-5)
        assert torch.allclose(target.image_latents(image), expected[:, :, 0], atol=1e-5)


def test_ti2v_replaces_the_first_frame(target, image, cond):
    """TI2V-5B: latent frame 0 of the transformer's input is the image's latent whatever the noisy latents
    hold there, the others are the noisy latents; each token has its own timestep, 0 on frame 0's tokens."""
    if not target.expand_timesteps:
        pytest.skip("Wan 2.1 / A14B concatenate on channels (test_channels_are_noisy_mask_image)")
    c, f = target.vae.config.z_dim, target.latent_frames(target.num_frames)
    side = target.height // target.pipe.vae_scale_factor_spatial
    noisy = torch.randn(1, f, c, side, side, generator=torch.Generator().manual_seed(0))
    level = target.noise_levels(3)[1:2]
    inputs = transformer_inputs(target, noisy, level, cond)
    hidden, timestep = inputs["hidden_states"], inputs["timestep"]
    assert hidden.shape[1] == c
    assert torch.allclose(hidden[:, :, 0], target.image_latents(image), atol=1e-5)
    assert torch.equal(hidden[:, :, 1:], noisy.transpose(1, 2)[:, :, 1:])
    tokens = (side // 2) ** 2
    assert timestep.shape == (1, f * tokens)
    assert (timestep[0, :tokens] == 0).all()
    assert (timestep[0, tokens:] == target.timestep(level)).all()


def test_expert_at_a_level(target):
    """A14B: `transformer` at timesteps >= boundary_ratio * 1000, `transformer_2` below (the pipeline's rule,
    checked against its own run in test_targets.test_expert_at_each_step); a batch across the boundary is
    refused; one-expert models always run `transformer`."""
    if target.boundary_timestep is None:
        assert target.expert(torch.tensor([0.99])) is target.expert(torch.tensor([0.01])) is target.pipe.transformer
        return
    boundary = target.boundary_timestep / 1000
    above, below = torch.tensor([boundary + 1e-3]), torch.tensor([boundary - 2e-3])
    assert target.timestep(above) >= target.boundary_timestep > target.timestep(below)
    assert target.expert(above) is target.pipe.transformer
    assert target.expert(below) is target.pipe.transformer_2
    assert target.pipe.transformer is not target.pipe.transformer_2
    with pytest.raises(ValueError, match="straddle"):
        target.expert(torch.cat([above, below]))


def test_shorter_video_is_the_pipelines(target, photo):
    """A cond made for the target's 9 frames serves a 5-frame video: `denoise` at 2 latent frames hands the
    transformer exactly what the pipeline hands it when it makes a 5-frame video (the latents' RoPE grid is
    that of 2 frames, the conditioning that of the 5-frame video: a prefix, the VAE being causal)."""
    steps, step, seed = 3, 1, 0
    pipe, recorded, samples = target.pipe, [], []
    step_fn = pipe.scheduler.step

    def record_step(model_output, t, sample, *args, **kwargs):
        samples.append(sample.clone())
        return step_fn(model_output, t, sample, *args, **kwargs)

    handles = [m.register_forward_pre_hook(lambda m, a, k: recorded.append((m, k)), with_kwargs=True)
               for m in target.denoisers]
    pipe.scheduler.step = record_step
    try:
        target.generate(photo, seed=seed, num_frames=5, num_inference_steps=steps, guidance_scale=1.0)
    finally:
        del pipe.scheduler.step
        for handle in handles:
            handle.remove()
    pixels = pipe.video_processor.preprocess(photo, height=target.height, width=target.width)
    image = with_photo((pixels + 1) / 2, target.to_tensor(photo))
    with torch.no_grad():
        cond = target.condition(image)
    ours = transformer_inputs(target, samples[step].transpose(1, 2), target.noise_levels(steps)[step:step + 1], cond)
    expert, theirs = recorded[step]
    assert target.expert(target.noise_levels(steps)[step:step + 1]) is expert
    assert ours["hidden_states"].shape[2] == theirs["hidden_states"].shape[2] == 2
    for name in ("hidden_states", "timestep", "encoder_hidden_states", "encoder_hidden_states_image"):
        a, b = ours[name], theirs[name]
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_recorder_is_diffusers_processor(target, cond):
    """With gradients on and maps recorded, the transformer's output is the one it gives with diffusers'
    stock WanAttnProcessor on every attention layer, and so is its rotary embedding's value."""
    c, f = target.vae.config.z_dim, target.latent_frames(target.num_frames)
    side = target.height // target.pipe.vae_scale_factor_spatial
    noisy = torch.randn(1, f, c, side, side, generator=torch.Generator().manual_seed(1))
    level = target.noise_levels(3)[:1]
    with target.capture_attention() as maps:
        out, _ = target.denoise(noisy, level, cond)
    assert len(maps) == target.num_attention_layers
    stock = copy.deepcopy(target.pipe)
    for transformer in (stock.transformer, stock.transformer_2):
        if transformer is not None:
            transformer.set_attn_processor(WanAttnProcessor())
            transformer.rope.__class__ = type(transformer.rope).__mro__[1]  # diffusers' WanRotaryPosEmbed
    original, target.pipe = target.pipe, stock  # `denoise` runs the pipeline's expert for the level
    try:
        with torch.no_grad():
            theirs, _ = target.denoise(noisy, level, cond)
    finally:
        target.pipe = original
    assert torch.allclose(out, theirs, atol=1e-5), (out - theirs).abs().max()


def test_clip_preprocessing(photo):
    """Wan 2.1's CLIP tokens: forward, exactly the pipeline's encode_image of the photo (PIL's 8-bit bicubic
    resize, crop, normalisation); backward, through torch's bicubic resize of the same photo, which is
    within 2 of 255 levels of PIL's (the straight-through estimator's gap)."""
    target = load_target("tiny-wan")
    full = target.to_tensor(photo).requires_grad_(True)
    small = torch.nn.functional.interpolate(full, size=(target.height, target.width), mode="area")
    ours = target.image_embeddings(with_photo(small, full))
    with torch.no_grad():
        theirs = target.pipe.encode_image(photo, target.device)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    (grad,) = torch.autograd.grad(ours.square().mean(), full)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    size = (32, 42)  # the processor's shortest edge 32 for a 96 x 128 photo
    with torch.no_grad():
        smooth = torch.nn.functional.interpolate(full, size=size, mode="bicubic", antialias=True).clamp(0, 1)
        exact = target._pil_resize(full[0], size, target.pipe.image_processor.resample)
    assert (smooth[0] - exact).abs().max() <= 2.5 / 255


@pytest.mark.parametrize("name", TINY_WAN)
def test_presets_run_all_frames(name):
    """Every method's fast and reference preset, built on Wan as a job builds it, attacks a frame count Wan
    makes (all of them), and fast Vid-Freeze reads the first 4 blocks (Immune2V's blocks 0-3)."""
    from guard import jobs
    from guard.presets import settings_for

    target = load_target(name)
    for method in sorted(jobs.METHODS):
        for preset in ("fast", "reference"):
            built, _ = jobs.Job(method=method, preset=preset).build(target)
            target.check_num_frames(getattr(built, "frames", None))
    assert settings_for("vidfreeze", "fast", target)[1]["layers"] == 4


@pytest.fixture(scope="module")
def text_encoder():
    """A fresh copy of the text encoder the tiny builders make (the same seed, the same weights); the
    targets drop theirs once the prompts are encoded."""
    from guard.targets.wan import _tiny_pipeline

    return _tiny_pipeline(0).text_encoder


@contextlib.contextmanager
def own_text_encoder(target, text_encoder):
    """The target's pipeline with a text encoder again, for the duration of the block."""
    target.pipe.text_encoder = text_encoder
    try:
        yield target.pipe
    finally:
        target.pipe.text_encoder = None


def test_prompts_encoded_once(target, cond, text_encoder):
    """The text encoder is gone after loading; the conditioning's text embeddings, and the negative ones
    guidance uses, are the pipeline's encode_prompt output (in the transformer's dtype, on its device)."""
    assert target.pipe.text_encoder is None
    with own_text_encoder(target, text_encoder) as pipe, torch.no_grad():
        theirs, negative = pipe.encode_prompt(target.prompt, target.negative_prompt, max_sequence_length=512,
                                              device=target.device)
    assert cond["prompt_embeds"].device == target.device and cond["prompt_embeds"].dtype == target.dtype
    assert torch.equal(cond["prompt_embeds"], theirs.to(target.dtype))
    assert torch.equal(target.negative_prompt_embeds, negative.to(target.dtype))


def test_video_is_the_pipelines_from_the_prompt(target, photo, text_encoder):
    """`generate` without a text encoder makes byte for byte the video the pipeline makes from the prompt
    with its own text encoder, same seed, with classifier-free guidance (prompt and negative prompt)."""
    ours = target.generate(photo, seed=5, num_inference_steps=2)
    with own_text_encoder(target, text_encoder) as pipe:
        theirs = pipe(photo, prompt=target.prompt, height=target.height, width=target.width,
                      num_frames=target.num_frames, num_inference_steps=2, output_type="np",
                      generator=torch.Generator(target.device).manual_seed(5)).frames[0]
    assert np.array_equal(ours.frames, (theirs * 255).round().astype(np.uint8))


def test_another_prompt_is_refused(target, photo):
    """Only the prompts encoded at load exist: another one is a ValueError naming the field."""
    with pytest.raises(ValueError, match="negative_prompt: "):
        target.generate(photo, num_inference_steps=1, negative_prompt="static")
    with pytest.raises(ValueError, match="prompt: "):
        target.generate(photo, num_inference_steps=1, prompt="a cat")
