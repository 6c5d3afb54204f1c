"""What is particular to the LTX-Video family (guard/targets/ltx.py), on tiny-ltx, against the pipeline's own
quantities; the contract every family meets is tests/test_targets.py. Here: the first-frame replacement and the
conditioning mask of `prepare_latents`, the per-token timesteps, the RoPE grid of the video's frame count (and
frame rate), the prompts encoded once with the text encoder dropped, the schedule's fractions, the recording
processor being diffusers' own, gradient checkpointing and maps_only."""

import contextlib
import copy

import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor

from guard.targets import load_target
from guard.targets.base import with_photo
from guard.targets.ltx import DEFAULT_PROMPT, LTXTarget, tiny_ltx

STEPS = 3


@pytest.fixture(scope="module")
def target():
    return load_target("tiny-ltx")


@pytest.fixture(scope="module")
def pixels(target, photo):
    """The photo as the pipeline preprocesses it (step 4), (1, 3, H, W) in [-1, 1]."""
    return target.pipe.video_processor.preprocess(photo, height=target.height, width=target.width)


@pytest.fixture(scope="module")
def image(target, pixels, photo):
    return with_photo((pixels + 1) / 2, target.to_tensor(photo))


@pytest.fixture(scope="module")
def cond(target, image):
    with torch.no_grad():
        return target.condition(image)


def latent_shape(target, num_frames=None):
    s = target.pipe.vae_spatial_compression_ratio
    return (target.latent_frames(num_frames or target.num_frames), target.vae.config.latent_channels,
            target.height // s, target.width // s)


def transformer_calls(target, run) -> list[dict]:
    """The keyword arguments of every transformer call made by run()."""
    calls = []
    handle = target.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k), with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return calls


@contextlib.contextmanager
def posterior_mode():
    """The VAE posterior's mode where the pipeline samples it (prepare_latents), as guard conditions on the mode."""
    sample = DiagonalGaussianDistribution.sample
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mode()
    try:
        yield
    finally:
        DiagonalGaussianDistribution.sample = sample


def pipeline_latents(target, pixels, num_frames=None):
    """The pipeline's own `prepare_latents` (posterior mode): packed latents and the packed conditioning mask."""
    with posterior_mode(), torch.no_grad():
        return target.pipe.prepare_latents(
            pixels, 1, target.transformer.config.in_channels, target.height, target.width,
            num_frames or target.num_frames, torch.float32, target.device, torch.Generator().manual_seed(0))


def test_first_frame_is_replaced_by_the_image(target, pixels, cond):
    """The transformer's input is prepare_latents' mix: latent frame 0 is the image's latent (normalised VAE
    posterior, the pipeline's own) whatever the noisy latents hold there, frames 1: are the noisy latents;
    the mask is prepare_latents' (one on latent frame 0's tokens only)."""
    f, c, h, w = latent_shape(target)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, f, c, h, w, generator=g)
    other = noisy.clone()
    other[:, 0] = torch.randn(c, h, w, generator=g) * 10
    level = target.noise_levels(STEPS)[1:2]
    (ours,), (again,) = (transformer_calls(target, lambda x=x: target.denoise(x, level, cond)) for x in (noisy, other))
    theirs, mask = pipeline_latents(target, pixels)
    hidden = target.unpack(ours["hidden_states"], f, h, w)  # (1, C, F', h, w)
    expected = target.unpack(theirs, f, h, w)
    assert torch.allclose(hidden[:, :, 0], expected[:, :, 0], atol=1e-6)
    assert torch.allclose(cond["image_latents"], expected[:, :, 0], atol=1e-6)
    assert torch.equal(hidden[:, :, 1:], noisy.transpose(1, 2)[:, :, 1:])
    assert torch.equal(ours["hidden_states"], again["hidden_states"])
    assert torch.equal(target.pack(target.conditioning_mask(f, h, w)).squeeze(-1), mask)
    assert mask[0, :h * w].eq(1).all() and mask[0, h * w:].eq(0).all()


def test_per_token_timesteps(target, pixels, cond):
    """Each token's timestep is t (1 - mask) with the pipeline's mask and t = the scheduler's timestep at the
    level: 0 on the image's tokens, t on every other."""
    f, c, h, w = latent_shape(target)
    scheduler = copy.deepcopy(target.scheduler)
    scheduler.set_timesteps(STEPS, sigmas=[1.0, 2 / 3, 1 / 3], mu=target._mu(target.num_frames, target.height,
                                                                         target.width))
    _, mask = pipeline_latents(target, pixels)
    for k in range(STEPS):
        level = target.noise_levels(STEPS)[k:k + 1]
        (call,) = transformer_calls(target, lambda: target.denoise(torch.zeros(1, f, c, h, w), level, cond))
        t = scheduler.timesteps[k]
        assert call["timestep"].shape == (1, f * h * w)
        assert torch.equal(call["timestep"], t.expand(1).unsqueeze(-1) * (1 - mask))
        assert (call["timestep"][0, :h * w] == 0).all() and (call["timestep"][0, h * w:] == t).all()


def generation_calls(target, photo, num_frames, frame_rate=None) -> tuple[list[dict], list[torch.Tensor]]:
    """The transformer's inputs and the rotary embeddings it computed in a 3-step generation without guidance."""
    ropes = []
    handle = target.transformer.rope.register_forward_hook(lambda m, a, out: ropes.append(out))
    try:
        with posterior_mode():
            calls = transformer_calls(target, lambda: target.generate(
                photo, seed=0, num_frames=num_frames, num_inference_steps=STEPS, guidance_scale=1.0,
                **({} if frame_rate is None else {"frame_rate": frame_rate})))
    finally:
        handle.remove()
    return calls, ropes


@pytest.mark.parametrize("num_frames, frame_rate", [(9, None), (5, None), (9, 12)])
def test_denoise_gets_generations_inputs(target, photo, image, num_frames, frame_rate):
    """At each frame count (the target's 9 and a shorter 5: 3 and 2 latent frames) and frame rate, `denoise`
    on the pipeline's latents hands the transformer exactly what the pipeline hands it (latents, per-token
    timesteps, text, mask, the RoPE grid's frame count, size and interpolation scale) and the rotary embedding
    it computes is generation's, the grid of that video; one frame count's grid is not another's."""
    calls, ropes = generation_calls(target, photo, num_frames, frame_rate)
    with torch.no_grad():
        cond = target.condition(image, **({} if frame_rate is None else {"frame_rate": frame_rate}))
    f, _, h, w = latent_shape(target, num_frames)
    step = 1
    latents = target.unpack(calls[step]["hidden_states"], f, h, w).transpose(1, 2)  # the pipeline's, guard's layout
    level = target.scheduler.sigmas[step:step + 1]  # the pipeline's sigma at that step (its schedule of this video)
    seen = []
    handle = target.transformer.rope.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        (ours,) = transformer_calls(target, lambda: target.denoise(latents, level, cond))
    finally:
        handle.remove()
    theirs = calls[step]
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        if torch.is_tensor(value):
            assert value.shape == ours[name].shape, name
            assert torch.allclose(value.float(), ours[name].float(), atol=1e-6), name
        else:
            assert value == ours[name], name
    assert all(torch.equal(a, b) for a, b in zip(seen[0], ropes[step]))
    if num_frames != target.num_frames:  # the default video's grid differs
        _, default = generation_calls(target, photo, target.num_frames)
        assert default[0][0].shape != ropes[0][0].shape


def test_attacks_see_the_rope_grid_of_the_video(photo):
    """Every transformer call of freeze, Vid-Freeze and I2VGuard (both presets, clean video included) computes
    the rotary embedding generation computes: the grid of the video's frame count and size, at its frame rate.
    Fails if a preset attacks another frame count. Fast Vid-Freeze reads the first 4 blocks (as on Wan)."""
    from guard.methods import get_method
    from guard.optimize import PGDConfig, protect
    from guard.presets import settings_for

    target = tiny_ltx()
    phase, seen = ["generate"], []
    hook = target.transformer.rope.register_forward_hook(
        lambda module, args, out: seen.append((phase[0], torch.cat(out, -1))))
    try:
        target.generate(photo, seed=0, num_inference_steps=2)
        for method in ("freeze", "vidfreeze", "i2vguard"):
            for preset in ("fast", "reference"):
                phase[0] = f"{method} {preset}"
                _, params = settings_for(method, preset, target)
                protect(target, photo, get_method(method, **params), PGDConfig(steps=1))
    finally:
        hook.remove()
    generation = seen[0][1]
    assert len({p for p, _ in seen}) == 7
    assert settings_for("vidfreeze", "fast", target)[1]["layers"] == 4
    # (B, S, 2 D): one grid per video in the batch (generation's batch is CFG's 2, an attack's its noise draws)
    assert [p for p, rope in seen if rope.shape[1:] != generation.shape[1:]
            or not all(torch.equal(grid, generation[0]) for grid in rope)] == []


def test_prompts_are_encoded_once(photo, monkeypatch):
    """The target keeps the pipeline's own encode_prompt of DEFAULT_PROMPT and of the default negative prompt,
    drops the text encoder, and `generate` with guidance (the pipeline's default 3) makes exactly the video the
    unchanged pipeline makes from the prompt text with its text encoder."""
    kept = {}
    encode = LTXTarget._encode_prompts

    def keep(self, prompt):
        kept["pipe"] = copy.deepcopy(self.pipe)  # with its text encoder
        encode(self, prompt)

    monkeypatch.setattr(LTXTarget, "_encode_prompts", keep)
    target = tiny_ltx()
    assert target.pipe.text_encoder is None and kept["pipe"].text_encoder is not None
    pipe = kept["pipe"]
    with torch.no_grad():
        embeds, mask, negative, negative_mask = pipe.encode_prompt(DEFAULT_PROMPT, device=target.device)
    for ours, theirs in ((target.prompt_embeds, embeds), (target.prompt_attention_mask, mask),
                         (target.negative_prompt_embeds, negative),
                         (target.negative_prompt_attention_mask, negative_mask)):
        assert torch.equal(ours, theirs)
    video = target.generate(photo, seed=2, num_inference_steps=2)
    own = pipe(photo, prompt=DEFAULT_PROMPT, height=target.height, width=target.width, num_frames=target.num_frames,
               num_inference_steps=2, generator=torch.Generator().manual_seed(2), output_type="np").frames[0]
    assert (video.frames == (own * 255).round().astype("uint8")).all()


def test_noise_fractions_follow_the_schedule(target):
    """Fraction 1 is sigma 1, fraction 0 the last step's sigma of the default schedule, and the fraction of
    each step's unshifted sigma (linspace(1, 1/n, n)) is that step's level; more fraction, more noise."""
    n = target.num_inference_steps
    levels = target.noise_levels()
    for k, s in enumerate(torch.linspace(1.0, 1 / n, n, dtype=torch.float64)):
        u = float((s - 1 / n) / (1 - 1 / n))
        assert torch.allclose(target._sample_noise_level(1, None, u, u), levels[k:k + 1], atol=1e-6), k
    draws = target.sample_noise_level(64, torch.Generator().manual_seed(0), 0.0, 1.0)
    assert draws.min() >= levels[-1] - 1e-6 and draws.max() <= 1.0


def test_frame_counts(target, photo):
    """LTX makes 1 + 8k frames (1 + 4k with the tiny VAE's 4x temporal compression): any other count is refused."""
    with pytest.raises(ValueError, match="num_frames must be 1 \\+ a multiple of 4"):
        target.generate(photo, num_frames=8)
    with pytest.raises(ValueError, match="num_inference_steps must be >= 2"):
        target.generate(photo, num_inference_steps=1)
    with pytest.raises(ValueError, match="got 8"):  # 8 frames would encode to the latents of a 5-frame video
        target.encode_video(torch.zeros(1, 8, 3, target.height, target.width))
    target.check_num_frames(13)
    with pytest.raises(ValueError, match="num_frames"):
        target.check_num_frames(0)


@pytest.fixture(scope="module")
def step(target, image):
    """One attack-shaped forward pass with gradients, every map captured."""
    x = image.detach().clone().requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    cond = target.condition(x, g)
    clean = torch.randn(1, *latent_shape(target), generator=g)
    level = target.sample_noise_level(1, g, 0.3, 0.7)
    noisy = target.add_noise(clean, torch.randn(clean.shape, generator=g), level)
    with target.capture_attention() as maps:
        out, x0 = target.denoise(noisy, level, cond)
    return x, cond, out, x0, maps, noisy, level


def test_recorder_is_diffusers_processor(target, step):
    """With gradients on and maps recorded, the transformer's output is the one it gives with diffusers' stock
    LTXVideoAttnProcessor and rotary embedding; x0's frame 0 is the image latent."""
    x, cond, out, x0, maps, noisy, level = step
    assert len(maps) == target.num_attention_layers == 2
    stock = copy.deepcopy(target.transformer)
    stock.set_attn_processor(LTXVideoAttnProcessor())
    stock.rope.__class__ = type(stock.rope).__mro__[1]  # diffusers' LTXVideoRotaryPosEmbed
    original, target.transformer = target.transformer, stock
    try:
        with torch.no_grad():
            theirs, _ = target.denoise(noisy, level, cond)
    finally:
        target.transformer = original
    assert torch.allclose(out.detach(), theirs, atol=1e-6), (out - theirs).abs().max()
    assert torch.equal(x0[:, 0].detach(), cond["image_latents"].detach())


def test_maps_with_gradient_checkpointing(target, step):
    """A checkpointed transformer recomputes blocks in backward: same gradient, no duplicate maps."""
    x, cond, out, x0, maps, noisy, level = step
    (reference,) = torch.autograd.grad(sum(m[..., 0].sum() for m in maps), x, retain_graph=True)
    target.transformer.enable_gradient_checkpointing()
    try:
        with target.capture_attention() as again:
            target.denoise(noisy, level, target.condition(x))
            (grad,) = torch.autograd.grad(sum(m[..., 0].sum() for m in again), x)
            assert len(again) == len(maps)
    finally:
        target.transformer.disable_gradient_checkpointing()
    assert torch.allclose(grad, reference, atol=1e-7, rtol=1e-4)


def test_maps_only_stops_after_the_blocks_read(target, step):
    """capture_attention(layers=1) + maps_only: the first block's map of a full call, the same gradient, and no
    later block runs (the forward stops inside block 0)."""
    x, cond, out, x0, maps, noisy, level = step
    (reference,) = torch.autograd.grad(maps[0][..., 0].sum(), x, retain_graph=True)
    ran = []
    hook = target.transformer.transformer_blocks[1].register_forward_pre_hook(lambda *a: ran.append(1))
    try:
        with target.capture_attention(layers=1) as first:
            assert target.denoise(noisy, level, target.condition(x), maps_only=True) == (None, None)
            (grad,) = torch.autograd.grad(first[0][..., 0].sum(), x)
    finally:
        hook.remove()
    assert len(first) == 1 and not ran
    assert torch.allclose(first[0], maps[0], atol=1e-6)
    assert torch.allclose(grad, reference, atol=1e-7, rtol=1e-4)


def test_video_latents_are_in_the_pipelines_space(target, photo):
    """encode_video puts frames where the pipeline's latents live: its `_denormalize_latents` (before its VAE
    decode) turns them back into the VAE's own posterior."""
    video = target.generate(photo, seed=0, num_inference_steps=2, return_latents=True)
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)[None].float() / 255  # (1, F, 3, H, W)
    with torch.no_grad():
        encoded = target.encode_video(frames)
        posterior = target.vae.encode((frames * 2 - 1).transpose(1, 2)).latent_dist.mode()
        back = target.pipe._denormalize_latents(encoded.transpose(1, 2), target.vae.latents_mean,
                                                target.vae.latents_std, target.vae.config.scaling_factor)
    assert encoded.shape == video.latents.shape
    assert torch.allclose(back, posterior, atol=1e-5)
