"""What is particular to the CogVideoX target, on the tiny random-weight configs: its working size, its
integer noise levels, its frame-to-frame attention maps (against the full softmax, the stock processor,
gradient checkpointing, maps_only), its video latents' space, the frame counts it refuses, and the
positional embedding the attacks see. What every family must do is checked in tests/test_targets.py."""

import contextlib

import numpy as np
import PIL.Image
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


def test_working_size():
    """With no size given: the pipeline's own default for CogVideoX-5b-I2V (its transformer's sample
    size, 480 x 720 there), read from the pipeline's check_inputs; for CogVideoX1.5, whose config names
    no single size, the model card's 768 x 1360."""
    from guard.targets.cogvideox import COGVIDEOX15_SIZE, _tiny_pipeline

    class Sizes(Exception):
        pass

    def stop(image, prompt, height, width, *args, **kwargs):
        raise Sizes(height, width)

    # fresh pipelines of the tiny builders (a target drops its pipeline's text encoder)
    pipe = _tiny_pipeline(0, transformer=dict(use_learned_positional_embeddings=True), vae={})
    pipe.check_inputs = stop
    with pytest.raises(Sizes) as sizes:
        pipe(PIL.Image.new("RGB", (8, 8)), prompt="a")
    target = CogVideoXTarget(pipe)
    assert (target.height, target.width) == sizes.value.args
    target = CogVideoXTarget(_tiny_pipeline(0, transformer=dict(patch_size_t=2, patch_bias=False, ofs_embed_dim=8,
                                                                use_learned_positional_embeddings=False),
                                            vae=dict(invert_scale_latents=True, scaling_factor=0.7)))
    assert (target.height, target.width) == COGVIDEOX15_SIZE


def test_noise_levels_are_integer_timesteps(tiny):
    a = tiny.sample_noise_level(256, torch.Generator().manual_seed(0), 0.2, 0.4)
    assert a.dtype == torch.int64
    assert a.min() >= round(0.2 * 999) and a.max() <= round(0.4 * 999) and a.unique().numel() > 10


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


def test_video_latents_are_in_the_pipelines_space(tiny, photo):
    """encode_video puts frames where the pipeline's latents live: its `decode_latents` (which divides
    by the scaling factor) turns them into exactly what the VAE's own round trip gives."""
    video = tiny.generate(photo, seed=0, num_inference_steps=1, return_latents=True)  # any latents will do
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


@pytest.fixture(scope="module")
def text_encoder():
    """A fresh copy of the text encoder `tiny_cogvideox` makes (the same seed, the same weights); the
    target drops its own once the prompts are encoded."""
    from guard.targets.cogvideox import _tiny_pipeline

    return _tiny_pipeline(0, transformer=dict(use_learned_positional_embeddings=True), vae={}).text_encoder


@contextlib.contextmanager
def own_text_encoder(target, text_encoder):
    """The target's pipeline with a text encoder again, for the duration of the block."""
    target.pipe.text_encoder = text_encoder
    try:
        yield target.pipe
    finally:
        target.pipe.text_encoder = None


def test_prompts_encoded_once(tiny, photo, text_encoder):
    """The text encoder is gone after loading; the conditioning's text embeddings, and the negative ones
    guidance uses, are the pipeline's encode_prompt output (in the transformer's dtype, on its device)."""
    assert tiny.pipe.text_encoder is None
    cond = tiny.condition(image_tensor(tiny, photo))
    max_length = tiny.transformer.config.max_text_seq_length
    with own_text_encoder(tiny, text_encoder) as pipe, torch.no_grad():
        theirs, negative = pipe.encode_prompt(tiny.prompt, tiny.negative_prompt, max_sequence_length=max_length,
                                              device=tiny.device)
    assert cond["prompt_embeds"].device == tiny.device and cond["prompt_embeds"].dtype == tiny.dtype
    assert torch.equal(cond["prompt_embeds"], theirs)
    assert torch.equal(tiny.negative_prompt_embeds, negative)


def test_video_is_the_pipelines_from_the_prompt(tiny, photo, text_encoder):
    """`generate` without a text encoder makes byte for byte the video the pipeline makes from the prompt
    with its own text encoder, same seed, with classifier-free guidance (prompt and negative prompt)."""
    ours = tiny.generate(photo, seed=5, num_inference_steps=2)
    with own_text_encoder(tiny, text_encoder) as pipe:
        theirs = pipe(photo, prompt=tiny.prompt, height=tiny.height, width=tiny.width, num_frames=tiny.num_frames,
                      num_inference_steps=2, output_type="np", generator=torch.Generator(tiny.device).manual_seed(5),
                      max_sequence_length=tiny.transformer.config.max_text_seq_length).frames[0]
    assert np.array_equal(ours.frames, (theirs * 255).round().astype(np.uint8))


def test_another_prompt_is_refused(tiny, photo):
    """Only the prompts encoded at load exist: another one is a ValueError naming the field."""
    with pytest.raises(ValueError, match="negative_prompt: "):
        tiny.generate(photo, num_inference_steps=1, negative_prompt="static")
    with pytest.raises(ValueError, match="prompt: "):
        tiny.generate(photo, num_inference_steps=1, prompt="a cat")
