"""The CogVideoX target on the tiny random-weight config: shapes, ranges, gradients, attention maps,
determinism."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

from guard.targets.cogvideox import (
    CogVideoXTarget,
    FrameAttentionRecorder,
    frame_attention,
    sample_query_indices,
    tiny_cogvideox,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_cogvideox()


def image_tensor(target, photo):
    return target.to_tensor(target.prepare_image(photo)).requires_grad_(True)


def latent_shape(target):
    """(F', C, h, w) of the target's default video."""
    s = target.pipe.vae_scale_factor_spatial
    frames = (target.num_frames - 1) // target.pipe.vae_scale_factor_temporal + 1
    return frames, target.vae.config.latent_channels, target.height // s, target.width // s


def test_registry_builds_tiny():
    from guard.targets import load_target

    assert isinstance(load_target("tiny-cogvideox"), CogVideoXTarget)


def test_working_resolution(tiny, photo):
    assert (tiny.height, tiny.width, tiny.num_frames, tiny.num_inference_steps) == (64, 96, 17, 3)
    assert tiny.prepare_image(photo).size == (tiny.width, tiny.height)
    assert "transformer_blocks" in tiny.attention_layers


def test_condition_shapes(tiny, photo):
    x = image_tensor(tiny, photo)
    cond = tiny.condition(x)
    f, c, h, w = latent_shape(tiny)
    assert cond["image_latents"].shape == (1, c, h, w)
    padded = cond["image_latents_padded"]
    assert padded.shape == (1, f, c, h, w)
    assert torch.equal(padded[:, 0], cond["image_latents"]) and not padded[:, 1:].any()
    assert cond["prompt_embeds"].shape == (1, tiny.transformer.config.max_text_seq_length, 32)
    assert not cond["prompt_embeds"].requires_grad
    assert cond["image_rotary_emb"] is not None and cond["ofs"] is None
    # the posterior mode: no randomness
    assert torch.equal(tiny.image_latents(x), cond["image_latents"])


def test_image_latents_match_pipeline_preprocessing(tiny, photo):
    """Our [0, 1] -> [-1, 1] path gives the latent the pipeline's preprocessing gives (mode, scaled)."""
    image = tiny.prepare_image(photo)
    pixels = tiny.pipe.video_processor.preprocess(image, height=tiny.height, width=tiny.width)
    with torch.no_grad():
        theirs = tiny.vae.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0] * tiny.vae.config.scaling_factor
        ours = tiny.image_latents(tiny.to_tensor(image))
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_noise_levels(tiny):
    a = tiny.sample_noise_level(256, torch.Generator().manual_seed(0), 0.2, 0.4)
    b = tiny.sample_noise_level(256, torch.Generator().manual_seed(0), 0.2, 0.4)
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert a.min() >= round(0.2 * 999) and a.max() <= round(0.4 * 999) and a.unique().numel() > 10
    with pytest.raises(ValueError, match="low"):
        tiny.sample_noise_level(1, None, 0.5, 0.2)


def test_predict_x0_inverts_velocity(tiny):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, *latent_shape(tiny), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 300, 700, 999])
    v = tiny.scheduler.get_velocity(x0, noise, t)
    assert torch.allclose(tiny.predict_x0(tiny.add_noise(x0, noise, t), v, t), x0, atol=1e-5)


@pytest.fixture(scope="module")
def step(tiny, photo):
    """One attack-shaped forward pass: everything a method may take a loss on."""
    x = image_tensor(tiny, photo)
    g = torch.Generator().manual_seed(0)
    cond = tiny.condition(x, generator=g)
    clean = torch.randn(1, *latent_shape(tiny), generator=g)
    level = tiny.sample_noise_level(1, g, 0.3, 0.7)
    noisy = tiny.add_noise(clean, torch.randn(clean.shape, generator=g), level)
    with tiny.capture_attention() as maps:
        out, x0 = tiny.denoise(noisy, level, cond)
    return x, cond, out, x0, maps, noisy, level


def test_denoise_shapes(step):
    x, cond, out, x0, maps, noisy, level = step
    assert out.shape == noisy.shape and x0.shape == noisy.shape
    assert torch.isfinite(out).all() and torch.isfinite(x0).all()


@pytest.mark.parametrize("quantity", ["image_latents", "denoiser_output", "predicted_x0", "attention"])
def test_gradients_reach_image(step, quantity):
    x, cond, out, x0, maps, noisy, level = step
    loss = {
        "image_latents": lambda: cond["image_latents"].square().mean(),
        "denoiser_output": lambda: out.square().mean(),
        "predicted_x0": lambda: x0.square().mean(),
        # off-diagonal mass: what a temporal attack would push on
        "attention": lambda: sum((m * (1 - torch.eye(m.shape[-1]))).sum() for m in maps),
    }[quantity]()
    (grad,) = torch.autograd.grad(loss, x, retain_graph=True)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_attention_maps(tiny, step):
    maps = step[4]
    config = tiny.transformer.config
    frames = latent_shape(tiny)[0]
    assert len(maps) == config.num_layers
    for m in maps:
        assert m.shape == (1, config.num_attention_heads, frames, frames)
        assert (m >= 0).all() and torch.allclose(m.sum(-1), torch.ones(()), atol=1e-5)
    assert not tiny.attention_store.enabled


def test_capture_leaves_output_unchanged(tiny, step):
    """The recorder's output is the stock processor's, with and without capture."""
    x, cond, out, x0, maps, noisy, level = step
    with torch.no_grad():
        plain, _ = tiny.denoise(noisy, level, cond)
        recorder = tiny.transformer.attn_processors["transformer_blocks.0.attn1.processor"]
        assert isinstance(recorder, FrameAttentionRecorder)
        tiny.transformer.set_attn_processor(CogVideoXAttnProcessor2_0())
        try:
            stock, _ = tiny.denoise(noisy, level, cond)
        finally:
            tiny.transformer.set_attn_processor(recorder)
    assert torch.equal(plain, out.detach())
    assert torch.allclose(stock, out.detach(), atol=1e-6, rtol=0), (stock - out).abs().max()


def test_frame_attention_matches_full_softmax():
    """Subsampled frame map == the full softmax over [text | video] keys, renormalised over the video
    keys, summed per frame, averaged over the sampled queries."""
    g = torch.Generator().manual_seed(0)
    b, heads, text, frames, per_frame, d = 2, 3, 5, 4, 10, 8
    q = torch.randn(b, heads, text + frames * per_frame, d, generator=g)
    k = torch.randn(b, heads, text + frames * per_frame, d, generator=g)
    idx = sample_query_indices(per_frame, 4)
    assert idx.tolist() == [0, 2, 5, 7]  # evenly spaced, fixed
    probs = (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)[:, :, text:, text:]  # video rows and keys
    probs = probs / probs.sum(-1, keepdim=True)  # renormalised over video keys
    mass = probs.unflatten(-1, (frames, per_frame)).sum(-1).unflatten(2, (frames, per_frame))
    expected = mass[:, :, :, idx].mean(3)  # (B, heads, F, F)
    got = frame_attention(q[:, :, text:], k[:, :, text:], frames, queries_per_frame=4)
    assert torch.allclose(got, expected, atol=1e-6)
    # more queries than tokens: all of them
    assert sample_query_indices(per_frame, 64).tolist() == list(range(per_frame))


def test_maps_with_gradient_checkpointing(tiny, step):
    """A checkpointed transformer recomputes blocks in backward: same gradient, no duplicate maps."""
    x, cond, out, x0, maps, noisy, level = step
    (reference,) = torch.autograd.grad(sum(m[..., 0].sum() for m in maps), x, retain_graph=True)
    tiny.transformer.enable_gradient_checkpointing()
    try:
        cond = tiny.condition(x)
        with tiny.capture_attention() as maps2:
            tiny.denoise(noisy, level, cond)
            (grad,) = torch.autograd.grad(sum(m[..., 0].sum() for m in maps2), x)
            assert len(maps2) == len(maps)
    finally:
        tiny.transformer.disable_gradient_checkpointing()
    assert torch.allclose(grad, reference, atol=1e-6, rtol=1e-4)


def test_generate_is_seeded(tiny, photo):
    calls = []
    a = tiny.generate(photo, seed=0, num_inference_steps=2, return_latents=True,
                      callback=lambda i, n: calls.append((i, n)))
    b = tiny.generate(photo, seed=0, num_inference_steps=2, return_latents=True)
    c = tiny.generate(photo, seed=1, num_inference_steps=2)
    assert a.frames.shape == (tiny.num_frames, tiny.height, tiny.width, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and torch.equal(a.latents, b.latents)
    assert not np.array_equal(a.frames, c.frames)
    assert calls == [(1, 2), (2, 2)]
    assert a.latents.shape == (1, *latent_shape(tiny)) and c.latents is None
    assert a.settings["seed"] == 0 and a.settings["model"] == "tiny-cogvideox" and a.settings["num_inference_steps"] == 2


def test_video_latents_are_in_the_pipelines_space(tiny, photo):
    """encode_video puts frames where the pipeline's latents live: its `decode_latents` (which divides
    by the scaling factor) turns them into exactly what the VAE's own round trip gives."""
    video = tiny.generate(photo, seed=0, num_inference_steps=2, return_latents=True)
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)[None].float() / 255  # (1, F, 3, H, W)
    with torch.no_grad():
        encoded = tiny.encode_video(frames)
        through_pipeline = tiny.pipe.decode_latents(encoded)  # (1, 3, F, H, W)
        posterior = tiny.vae.encode((frames * 2 - 1).transpose(1, 2)).latent_dist.mode()
        round_trip = tiny.vae.decode(posterior).sample
    assert encoded.shape == video.latents.shape
    assert torch.allclose(through_pipeline, round_trip, atol=1e-5), (through_pipeline - round_trip).abs().max()


def test_generate_rejects_bad_frame_count(tiny, photo):
    with pytest.raises(ValueError, match="num_frames"):
        tiny.generate(photo, num_frames=8)
    # 1 + 4k, but not the count its learned positional embedding was made for: one sentence
    with pytest.raises(ValueError, match="17-frame videos only"):
        tiny.generate(photo, num_frames=9)
    with pytest.raises(ValueError, match="17-frame videos only"):
        tiny.denoise(torch.zeros(1, 3, *latent_shape(tiny)[1:]), torch.tensor([500]), tiny.condition(
            tiny.to_tensor(tiny.prepare_image(photo))))


def test_attacks_see_the_positional_embedding_of_the_video(photo):
    """Every transformer call of Vid-Freeze and I2VGuard (both presets, clean video included) gets the
    latent frame count generation gets, so diffusers' CogVideoXPatchEmbed uses the same (learned)
    positional embedding; it never substitutes its sin-cos one. Fails if a preset attacks fewer frames."""
    from guard.methods import get_method
    from guard.optimize import PGDConfig, protect
    from guard.presets import settings_for

    target = tiny_cogvideox()
    embed = target.transformer.patch_embed
    assert embed.use_learned_positional_embeddings
    phase, seen, substituted = ["generate"], [], []
    make_embedding = embed._get_positional_embeddings

    def spy(*args, **kwargs):
        substituted.append(phase[0])
        return make_embedding(*args, **kwargs)

    embed._get_positional_embeddings = spy
    hook = embed.register_forward_pre_hook(lambda module, args: seen.append((phase[0], args[1].shape[1:])))
    try:
        target.generate(photo, seed=0, num_inference_steps=2)
        for method in ("vidfreeze", "i2vguard"):
            for preset in ("fast", "reference"):
                phase[0] = f"{method} {preset}"
                _, params = settings_for(method, preset, target)
                protect(target, photo, get_method(method, **params), PGDConfig(steps=1))
    finally:
        hook.remove()
        del embed._get_positional_embeddings
    generation = {shape for p, shape in seen if p == "generate"}
    assert len(generation) == 1 and len({p for p, _ in seen}) == 5
    assert [(p, tuple(s)) for p, s in seen if s not in generation] == []
    assert substituted == []


def test_maps_only_stops_after_the_blocks_read(tiny, step):
    """capture_attention(layers=1) + maps_only: the first block's map of a full call, the same gradient,
    and no later block runs (the forward stops inside block 0)."""
    x, cond, out, x0, maps, noisy, level = step
    (reference,) = torch.autograd.grad(maps[0][..., 0].sum(), x, retain_graph=True)
    ran = []
    hook = tiny.transformer.transformer_blocks[1].register_forward_pre_hook(lambda *a: ran.append(1))
    try:
        with tiny.capture_attention(layers=1) as first:
            assert tiny.denoise(noisy, level, tiny.condition(x), maps_only=True) == (None, None)
            (grad,) = torch.autograd.grad(first[0][..., 0].sum(), x)
    finally:
        hook.remove()
    assert len(first) == 1 and not ran
    assert torch.allclose(first[0], maps[0], atol=1e-6)
    assert torch.allclose(grad, reference, atol=1e-7, rtol=1e-4)
