"""The Target contract (guard/targets/base.py), checked on every registered tiny builder
(`guard.targets.TINY_MODELS`) against the diffusers pipeline's own quantities: what the pipeline computes
when it runs (hooks on its methods, its scheduler and its denoiser), never guard's formulas written again.

A new family gets every check by registering its tiny builder, plus one entry in each table below (which
pipeline methods return its conditioning, how its attention layer computes the maps guard records), the
way diffusers' PipelineTesterMixin serves every pipeline that supplies its dummy components.
"""

import contextlib
import copy
import inspect

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.attention_processor import Attention
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.embeddings import apply_rotary_emb

from guard.targets import FAMILIES, MODELS, TINY_MODELS, Family, family_of, load_target
from guard.targets.base import Target, unnormalize_to_zero_to_one, with_photo

SEED, STEPS, STEP = 3, 3, 1  # the pipeline run: its seed, its denoising steps, the step compared

#: options every family is called with, as the app and the methods call them (each family keeps its own
#: and ignores the others'): values other than the defaults, so that an option a family drops shows,
#: and classifier-free guidance off, so that the scheduler steps with the denoiser's output itself
CONDITION_OPTIONS = dict(fps=5, motion_bucket_id=37, noise_aug_strength=0.05)
VIDEO_OPTIONS = dict(CONDITION_OPTIONS, min_guidance_scale=1.0, max_guidance_scale=1.0, guidance_scale=1.0)


def ltx_first_latent_frame(target, returned) -> torch.Tensor:
    """LTX's prepare_latents returns packed latents whose latent frame 0 is the image's latent: (B, C, h, w)."""
    return ltx_latents(target, returned[0])[:, 0]


#: per family, the pipeline methods that return entries of `condition`'s dict, as the pipeline computes
#: them when `generate` runs: cond key -> (method, index in its return value, None for all of it, or a
#: function (target, return value) -> the entry)
PIPELINE_CONDITIONING = {
    "svd": {"image_embeddings": ("_encode_image", None), "image_latents": ("_encode_vae_image", None),
            "added_time_ids": ("_get_add_time_ids", None)},
    "cogvideox": {"image_latents_padded": ("prepare_latents", 1), "prompt_embeds": ("encode_prompt", 0)},
    # image_embeds: Wan 2.1 only (the pipeline calls encode_image only for a transformer with image_dim)
    "wan": {"condition": ("prepare_latents", 1), "prompt_embeds": ("encode_prompt", 0),
            "image_embeds": ("encode_image", None)},
    "ltx": {"image_latents": ("prepare_latents", ltx_first_latent_frame), "prompt_embeds": ("encode_prompt", 0),
            "prompt_attention_mask": ("encode_prompt", 1)},
}


def ltx_latents(target, latents: torch.Tensor) -> torch.Tensor:
    """LTX's latents in guard's layout: packed tokens (B, F' h w, C) of the target's video (the transformer's
    input and output, prepare_latents' return) unpacked by the pipeline's own `_unpack_latents`, or the
    (B, C, F', h, w) its scheduler steps."""
    if latents.ndim == 3:
        s = target.pipe.vae_spatial_compression_ratio
        frames = (target.num_frames - 1) // target.pipe.vae_temporal_compression_ratio + 1
        latents = target.pipe._unpack_latents(latents, frames, target.height // s, target.width // s)
    return latents.transpose(1, 2)


#: per family whose pipeline denoises latents laid out otherwise than guard's (B, F', C, h, w): the
#: conversion (target, latents) -> guard's layout (Wan's pipeline: (B, C, F', h, w); LTX: packed tokens)
PIPELINE_LATENTS = {"wan": lambda target, latents: latents.transpose(1, 2), "ltx": ltx_latents}


def svd_attention(attn: Attention, args: tuple, kwargs: dict, processor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) of a temporal self-attention layer from its own to_q / to_k, laid out as
    diffusers' head_to_batch_dim lays it out: (B*H*W*heads, F, F)."""
    hidden = args[0] if args else kwargs["hidden_states"]  # (B*H*W, F, C)
    q = attn.to_q(hidden).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (B*H*W, heads, F, d)
    k = attn.to_k(hidden).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    return (q @ k.transpose(-1, -2) * attn.scale).softmax(-1).flatten(0, 1)


def cogvideox_attention(attn: Attention, args: tuple, kwargs: dict, processor) -> torch.Tensor:
    """The full softmax of a 3D attention layer over [text | video] keys (its own to_q / to_k, norms and
    the rotary embedding it is given), renormalised over the video keys, summed per key frame, averaged
    over the queries the recorder samples in each frame: (B, heads, F, F)."""
    from guard.targets.cogvideox import sample_query_indices

    text, video, frames = kwargs["encoder_hidden_states"], kwargs["hidden_states"], kwargs["frame_map_frames"]
    tokens = torch.cat([text, video], dim=1)
    q = attn.norm_q(attn.to_q(tokens).unflatten(-1, (attn.heads, -1)).transpose(1, 2))  # (B, heads, L+N, d)
    k = attn.norm_k(attn.to_k(tokens).unflatten(-1, (attn.heads, -1)).transpose(1, 2))
    n = text.shape[1]
    q = torch.cat([q[:, :, :n], apply_rotary_emb(q[:, :, n:], kwargs["image_rotary_emb"])], dim=2)
    k = torch.cat([k[:, :, :n], apply_rotary_emb(k[:, :, n:], kwargs["image_rotary_emb"])], dim=2)
    probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)[:, :, n:, n:]  # video queries, video keys
    probs = probs / probs.sum(-1, keepdim=True)
    mass = probs.unflatten(-1, (frames, -1)).sum(-1).unflatten(2, (frames, -1))  # (B, heads, F, S, F)
    idx = sample_query_indices(mass.shape[3], processor.queries_per_frame)
    return mass[:, :, :, idx].mean(3)


def wan_attention(attn: Attention, args: tuple, kwargs: dict, processor) -> torch.Tensor:
    """The full softmax of Wan's 3D self-attention (its own to_q / to_k, RMS norms across heads and the
    rotary embedding it is given, rotating interleaved pairs), summed per key frame, averaged over the
    queries the recorder samples in each frame: (B, heads, F, F). The frame count is read from the rotary
    embedding: its temporal part has one distinct row per frame."""
    from guard.targets.cogvideox import sample_query_indices

    hidden, (cos, sin) = args[0], args[3]  # WanAttention.forward(hidden_states, None, None, rotary_emb)
    q = attn.norm_q(attn.to_q(hidden)).unflatten(-1, (attn.heads, -1))  # (B, N, heads, d)
    k = attn.norm_k(attn.to_k(hidden)).unflatten(-1, (attn.heads, -1))

    def rotate(x):  # pairs (x[2i], x[2i+1]) rotated by the angle whose cos / sin the embedding holds
        x1, x2 = x[..., 0::2], x[..., 1::2]
        c, s = cos[..., 0::2], sin[..., 0::2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)

    q, k = rotate(q).transpose(1, 2), rotate(k).transpose(1, 2)  # (B, heads, N, d)
    d = q.shape[-1]
    t_dim = d - 4 * (d // 6)  # WanRotaryPosEmbed: h_dim = w_dim = 2 * (d // 6)
    frames = torch.unique(cos[0, :, 0, :t_dim], dim=0).shape[0]
    probs = (q @ k.transpose(-1, -2) / d ** 0.5).softmax(-1)
    mass = probs.unflatten(-1, (frames, -1)).sum(-1).unflatten(2, (frames, -1))  # (B, heads, F, S, F)
    idx = sample_query_indices(mass.shape[3], processor.queries_per_frame)
    return mass[:, :, :, idx].mean(3)


def ltx_attention(attn: Attention, args: tuple, kwargs: dict, processor) -> torch.Tensor:
    """The full softmax of LTX's 3D self-attention (its own to_q / to_k, RMS norms across heads and the rotary
    embedding it is given, diffusers' `apply_rotary_emb` of transformer_ltx), summed per key frame, averaged
    over the queries the recorder samples in each frame: (B, heads, F, F). The frame count is read from the
    rotary embedding: its temporal part has one distinct row per frame."""
    from diffusers.models.transformers.transformer_ltx import apply_rotary_emb as ltx_rotary

    from guard.targets.cogvideox import sample_query_indices

    hidden, (cos, sin) = kwargs["hidden_states"], kwargs["image_rotary_emb"]
    q = ltx_rotary(attn.norm_q(attn.to_q(hidden)), (cos, sin)).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    k = ltx_rotary(attn.norm_k(attn.to_k(hidden)), (cos, sin)).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    # LTXVideoRotaryPosEmbed: dim % 6 padding columns, then per frequency (frame, height, width) pairs
    temporal = torch.cat([cos, sin], -1)[0].unflatten(-1, (2, -1))[:, :, cos.shape[-1] % 6:]
    temporal = temporal.unflatten(-1, (-1, 3, 2))[..., 0, 0].flatten(1)
    frames = torch.unique(temporal, dim=0).shape[0]
    d = q.shape[-1]
    probs = (q @ k.transpose(-1, -2) / d ** 0.5).softmax(-1)
    mass = probs.unflatten(-1, (frames, -1)).sum(-1).unflatten(2, (frames, -1))  # (B, heads, F, S, F)
    idx = sample_query_indices(mass.shape[3], processor.queries_per_frame)
    return mass[:, :, :, idx].mean(3)


#: per family, the attention maps a layer guard records computes, recomputed from the layer's inputs
PIPELINE_ATTENTION = {"svd": svd_attention, "cogvideox": cogvideox_attention, "wan": wan_attention,
                      "ltx": ltx_attention}


def wan_final_latents(target, run, last: torch.Tensor) -> torch.Tensor:
    """Wan 2.2 TI2V (expand_timesteps): after its loop the pipeline puts the image's latent (prepare_latents'
    second return) back on latent frame 0."""
    if not target.pipe.config.expand_timesteps:
        return last
    last = last.clone()
    last[:, :1] = PIPELINE_LATENTS["wan"](target, run["returns"]["prepare_latents"][1])
    return last


#: per family whose pipeline changes its latents after the last scheduler step: the latents it returns
PIPELINE_FINAL_LATENTS = {"wan": wan_final_latents}


def ltx_steps(target, steps: list, inputs: list, outputs: list) -> list:
    """LTX's scheduler steps latent frames 1: only and keeps latent frame 0 (the image's latent) as it is: each
    step over the whole video is the transformer's input and output (all frames) with the step's frames 1:
    after that latent frame 0 (the scheduler's own sample, checked to be the input's frames 1:)."""
    whole = []
    for step, given, out in zip(steps, inputs, outputs):
        sample = ltx_latents(target, given["hidden_states"]).float()
        assert torch.equal(sample[:, 1:], step["sample"].float()), "the scheduler stepped other latents"
        image = sample[:, :1]
        whole.append(dict(step, sample=sample, model_output=out,
                          prev_sample=torch.cat([image, step["prev_sample"]], dim=1),
                          pred_original_sample=torch.cat([image, step["pred_original_sample"]], dim=1)))
    return whole


#: per family whose scheduler steps part of the video: its steps over the whole video, in guard's layout,
#: from the recorded steps and the denoiser's inputs and outputs
PIPELINE_STEPS = {"ltx": ltx_steps}


def denoisers(target: Target) -> tuple:
    """The denoisers a pipeline may call (Wan 2.2 A14B's two experts), `target.denoiser` first."""
    return getattr(target, "denoisers", (target.denoiser,))


# -- the registry -----------------------------------------------------------------------------------
def test_every_family_is_served():
    """Every family has a tiny builder (so this suite runs on it) and an entry in each table above; tiny
    models are names the app and the CLI accept."""
    assert set(TINY_MODELS.values()) == set(FAMILIES)
    assert set(PIPELINE_CONDITIONING) == set(PIPELINE_ATTENTION) == set(FAMILIES)
    assert all(name in MODELS and MODELS[name] is None for name in TINY_MODELS)


def test_family_of_reads_the_pipeline_class(tmp_path):
    from guard.targets import EMBEDDED_PATH

    assert family_of(str(EMBEDDED_PATH)) == "svd"
    for name, family in FAMILIES.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model_index.json").write_text(f'{{"_class_name": "{family.pipeline}"}}')
        assert family_of(str(folder)) == name
    (tmp_path / "model_index.json").write_text('{"_class_name": "HunyuanVideoImageToVideoPipeline"}')
    with pytest.raises(ValueError, match="HunyuanVideoImageToVideoPipeline; guard knows StableVideoDiffusionPipeline, "
                                         "CogVideoXImageToVideoPipeline, WanImageToVideoPipeline, "
                                         "LTXImageToVideoPipeline"):
        load_target(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot read its model_index.json"):
        load_target(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        load_target("no-such-model")


def test_named_models_know_their_family(monkeypatch):
    """svd, svd-xt, cogvideox and embedded load with their family's class without reading any
    model_index.json (a hub id's would be a download)."""
    import guard.targets

    monkeypatch.setattr(guard.targets, "family_of", lambda path: pytest.fail(f"looked up {path}"))
    loaded = []
    for family in FAMILIES.values():
        cls = family.target_class
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda c, path, **kw: loaded.append((c, path))))
    for family in FAMILIES.values():
        for name, path in family.models.items():
            load_target(name)
            assert loaded.pop() == (family.target_class, path)


# -- the contract, on every tiny builder ------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def target(request) -> Target:
    return load_target(request.param)


@contextlib.contextmanager
def recording_returns(obj, names, returns: dict):
    """Inside: each method `names` of `obj` records its return value in `returns[name]`."""
    for name in names:
        method = getattr(obj, name)
        setattr(obj, name, lambda *a, _method=method, _name=name, **k: returns.setdefault(_name, _method(*a, **k)))
    try:
        yield
    finally:
        for name in names:
            delattr(obj, name)


@contextlib.contextmanager
def recording_inputs(module: torch.nn.Module, calls: list):
    """Inside: every call of `module` appends its arguments by name (cloned as it receives them)."""
    signature = inspect.signature(module.forward)

    def hook(module, args, kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        calls.append({name: value.clone() if torch.is_tensor(value) else value for name, value in bound.items()})

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def posterior_mode():
    """The VAE posterior's mode wherever a pipeline samples it (CogVideoX's prepare_latents), as guard
    conditions on the mode."""
    sample = DiagonalGaussianDistribution.sample
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mode()
    try:
        yield
    finally:
        DiagonalGaussianDistribution.sample = sample


@pytest.fixture(scope="module")
def run(target, photo):
    """`generate` of the photo as given (SEED, STEPS, VIDEO_OPTIONS), with what the pipeline computes
    recorded: the call it got, the returns of its conditioning methods, each denoiser call's inputs and
    output, each scheduler step's sample and pred_original_sample; then the pipeline's own output_type="np"
    frames from the same call with a fresh generator seeded SEED. The VAE posterior is its mode in both."""
    pipe, scheduler = target.pipe, target.pipe.scheduler
    calls, returns, inputs, outputs, steps, progress, experts = [], {}, [], [], [], [], []
    call, scheduler_step = type(pipe).__call__, scheduler.step

    convert = PIPELINE_LATENTS.get(target.family)
    layout = (lambda latents: latents) if convert is None else (lambda latents: convert(target, latents))

    def record_step(model_output, timestep, sample, *args, return_dict=True, **kwargs):
        flow_euler = isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
        if flow_euler:  # the sigma of this step, before the step moves the scheduler's index
            sigma = scheduler.sigmas[scheduler.step_index if scheduler.step_index is not None
                                     else scheduler.index_for_timestep(timestep)]
        out = scheduler_step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        # a multistep scheduler (UniPC) returns no pred_original_sample: its x0 is the data prediction it
        # converted the model output to, the last of its model_outputs; flow-matching Euler keeps neither: its
        # model output is the velocity noise - x0 at its sigma (its scale_noise), so x0 = sample - sigma * output
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None and flow_euler:
            x0 = sample.float() - sigma * model_output.float()
        elif x0 is None:
            x0 = scheduler.model_outputs[-1]
        steps.append(dict(sample=layout(sample.clone()), model_output=layout(model_output.clone()),
                          prev_sample=layout(out.prev_sample), pred_original_sample=layout(x0.clone()),
                          timestep=timestep))
        return out if return_dict else out.to_tuple()

    methods = {method for method, _ in PIPELINE_CONDITIONING[target.family].values()}
    with posterior_mode():
        with (pytest.MonkeyPatch.context() as mp, recording_returns(pipe, methods, returns),
              contextlib.ExitStack() as stack):
            for denoiser in denoisers(target):
                stack.enter_context(recording_inputs(denoiser, inputs))
                stack.callback(denoiser.register_forward_hook(
                    lambda m, a, out: outputs.append(layout(out[0].clone())) or experts.append(m)).remove)
            mp.setattr(type(pipe), "__call__", lambda self, *a, **k: calls.append((a, k)) or call(self, *a, **k))
            mp.setattr(scheduler, "step", record_step)
            video = target.generate(photo, seed=SEED, num_inference_steps=STEPS, return_latents=True,
                                    callback=lambda i, n: progress.append((i, n)), **VIDEO_OPTIONS)
        assert len(calls) == 1 and len(inputs) == len(steps) == STEPS
        if target.family in PIPELINE_STEPS:
            steps = PIPELINE_STEPS[target.family](target, steps, inputs, outputs)
        assert outputs[0].shape == steps[0]["sample"].shape, "the pipeline ran with classifier-free guidance: " \
            "add the family's option that turns it off to VIDEO_OPTIONS"
        (args, kwargs), = calls
        kwargs = kwargs | dict(generator=torch.Generator(target.device).manual_seed(SEED), output_type="np",
                               callback_on_step_end=None)
        own = call(pipe, *args, **kwargs).frames[0]  # (F, H, W, 3) in [0, 1]
    return dict(video=video, call=calls[0], returns=returns, inputs=inputs, outputs=outputs, steps=steps,
                progress=progress, own=own, experts=experts)


@pytest.fixture(scope="module")
def image(target, photo) -> torch.Tensor:
    """The photo as the pipeline sees it at the working size (its own preprocessing), in [0, 1], marked
    with the full-size photo (`with_photo`), as the PGD loop hands images to methods."""
    pixels = target.pipe.video_processor.preprocess(photo, height=target.height, width=target.width)
    return with_photo(unnormalize_to_zero_to_one(pixels.to(target.device)), target.to_tensor(photo))


@pytest.fixture(scope="module")
def cond(target, image) -> dict:
    """`condition` with the options of the run and a generator seeded as `generate` seeds the pipeline's."""
    return target.condition(image, torch.Generator(target.device).manual_seed(SEED), **CONDITION_OPTIONS)


def differing_inputs(theirs: dict, ours: dict, skip: tuple = ()) -> list[str]:
    """Names of the denoiser inputs (by parameter name) whose values differ; a tensor of one element may
    be a scalar on the other side (SVD's pipeline passes its timestep as a 0-d tensor)."""

    def same(a, b) -> bool:
        if torch.is_tensor(a) and torch.is_tensor(b):
            return a.numel() == b.numel() and torch.allclose(a.float().reshape(b.shape), b.float(),
                                                             rtol=1e-5, atol=1e-5)
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    return sorted(name for name in theirs.keys() | ours.keys()
                  if name not in skip and not same(theirs.get(name), ours.get(name)))


def test_registry_entry(target):
    family = FAMILIES[TINY_MODELS[target.name]]
    assert target.family == TINY_MODELS[target.name] and isinstance(target, family.target_class)
    assert type(target.pipe).__name__ == family.pipeline
    assert any(target.denoiser is component for component in target.pipe.components.values())


def test_options_are_declared(target):
    """Each declared option is a keyword of the family's `_condition` / `_generate`; a condition option is
    also a video option (the attack conditions as the video is made) with its default on the target; a
    video option is a parameter of the pipeline, passed on under its name."""
    own = lambda method: set(inspect.signature(method).parameters)  # noqa: E731
    assert set(target.condition_options) <= own(target._condition)
    assert set(target.generate_options) <= own(target._generate) & own(type(target.pipe).__call__)
    assert set(target.condition_options) <= set(target.generate_options)
    assert all(hasattr(target, name) for name in target.condition_options)


def changed(value):
    return not value if isinstance(value, bool) else value + (" moving" if isinstance(value, str) else 1)


def test_condition_options(target, image, cond):
    """A name no family declares is refused; another family's option is ignored; each of the family's
    own changes the conditioning."""
    g = lambda: torch.Generator(target.device).manual_seed(SEED)  # noqa: E731
    with pytest.raises(ValueError, match="'motion_bucket'"):
        target.condition(image, g(), motion_bucket=3)
    with pytest.raises(ValueError, match="'guidance'"):
        target.generate(None, guidance=3.0)
    plain = target.condition(image, g())
    differs = lambda a, b: not torch.equal(a, b) if torch.is_tensor(a) else a != b  # noqa: E731
    for name in target.condition_options:
        other = target.condition(image, g(), **{name: changed(getattr(target, name))})
        assert any(differs(other[k], plain[k]) for k in plain), name


def test_options_of_other_families_are_ignored(target, image, monkeypatch):
    """With a family registered that has a "zoom" option, `condition(..., zoom=...)` on any other is
    `condition(...)`."""
    class Zoom(Target):
        condition_options = ("zoom",)
        generate_options = ("zoom",)

    class ZoomFamily(Family):
        target_class = property(lambda self: Zoom)

    monkeypatch.setitem(FAMILIES, "zoom", ZoomFamily("ZoomPipeline", "zoom", "Zoom"))
    g = lambda: torch.Generator(target.device).manual_seed(SEED)  # noqa: E731
    with_zoom, without = target.condition(image, g(), zoom=2.0), target.condition(image, g())
    assert with_zoom.keys() == without.keys()
    assert all(torch.equal(with_zoom[k], without[k]) for k in without if torch.is_tensor(without[k]))


def test_conditioning_is_the_pipelines(target, run, cond):
    """Each entry of the conditioning is what the pipeline's own method returned while it made the video
    (SVD: CLIP of the full-size photo, the VAE latent of its working-size resize with the noise
    augmentation of the same seed, the added time ids; CogVideoX: the image latents prepare_latents makes
    (posterior mode), padded as the transformer takes them, and the prompt's embedding)."""
    for key, (method, index) in PIPELINE_CONDITIONING[target.family].items():
        if key not in cond:  # an entry this model does not have (Wan 2.2's CLIP tokens): nor does its pipeline
            assert method not in run["returns"], (key, method)
            continue
        returned = run["returns"][method]
        theirs = returned if index is None else index(target, returned) if callable(index) else returned[index]
        assert cond[key].shape == theirs.shape, key
        assert torch.allclose(cond[key].float(), theirs.float(), atol=1e-5), (key, (cond[key] - theirs).abs().max())


def test_noising_is_the_schedulers(target, run):
    """add_noise at the level of each pipeline step is the scheduler's own add_noise at its timestep (a
    flow-matching scheduler's scale_noise, on the schedule the pipeline set: LTX's depends on the video's size)."""
    if hasattr(target.pipe.scheduler, "add_noise"):
        scheduler = type(target.pipe.scheduler).from_config(target.pipe.scheduler.config)
        scheduler.set_timesteps(STEPS, device=target.device)
        add_noise = scheduler.add_noise
    else:
        scheduler = copy.deepcopy(target.pipe.scheduler)  # as the run left it: its timesteps are the run's
        scheduler._begin_index = None  # look each timestep up in the schedule
        add_noise = lambda clean, noise, t: scheduler.scale_noise(clean, t, noise)  # noqa: E731
        assert [float(t) for t in scheduler.timesteps] == [float(step["timestep"]) for step in run["steps"]]
    levels = target.noise_levels(STEPS)
    assert levels.shape == (STEPS,)
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(run["steps"][0]["sample"].shape, generator=g)
    noise = torch.randn(clean.shape, generator=g)
    for k in range(STEPS):
        ours = target.add_noise(clean, noise, levels[k:k + 1])
        theirs = add_noise(clean, noise, scheduler.timesteps[k:k + 1])
        assert torch.allclose(ours, theirs, atol=1e-5), (k, (ours - theirs).abs().max())


def test_denoiser_is_the_pipelines(target, run, cond):
    """At the pipeline's step STEP (its latents, `noise_levels`' level for that step, the conditioning
    of the same seed): `denoise` hands the denoiser exactly the inputs the pipeline handed it (latents
    and image latents in their order, timestep, embeddings, positional inputs), gets its output, and
    its x0 is the scheduler's pred_original_sample at that step."""
    step, calls, called = run["steps"][STEP], [], []
    with torch.no_grad(), contextlib.ExitStack() as stack:
        for denoiser in denoisers(target):
            stack.enter_context(recording_inputs(denoiser, calls))
            stack.callback(denoiser.register_forward_hook(lambda m, a, out: called.append(m)).remove)
        out, x0 = target.denoise(step["sample"], target.noise_levels(STEPS)[STEP:STEP + 1], cond)
    assert called == [run["experts"][STEP]], "denoise ran another expert than the pipeline at this step"
    assert differing_inputs(run["inputs"][STEP], calls[0]) == []
    assert torch.allclose(out, run["outputs"][STEP].float(), atol=1e-4), (out - run["outputs"][STEP]).abs().max()
    assert torch.allclose(out, step["model_output"].float(), atol=1e-4)
    assert x0.dtype == torch.float32
    assert torch.allclose(x0, step["pred_original_sample"], atol=1e-4), (x0 - step["pred_original_sample"]).abs().max()


def test_positional_inputs_at_the_attacked_frame_count(target, run, cond):
    """An attack denoises latents of the video's frame count (`Video.latents`, `encode_video`, without
    any padding frame the pipeline adds): the denoiser then gets the inputs of the pipeline's video
    (rotary / learned positional embedding of the same frame count, ofs, timestep, conditioning), only
    the latents' values differ."""
    step, frames, calls = run["steps"][STEP], run["video"].latents.shape[1], []
    first = next(iter(run["inputs"][STEP]))  # the latents the denoiser is given (sample / hidden_states)
    with torch.no_grad(), recording_inputs(run["experts"][STEP], calls):
        target.denoise(step["sample"][:, -frames:], target.noise_levels(STEPS)[STEP:STEP + 1], cond)
    assert calls[0][first].shape == run["inputs"][STEP][first].shape
    assert differing_inputs(run["inputs"][STEP], calls[0], skip=(first,)) == []


def test_attention_maps(target, run, cond):
    """Inside capture_attention: one map per recorded layer (`num_attention_layers`, the layers with
    guard's processors), each (..., F, F) with rows summing to one, equal to the map recomputed from the
    layer's own projections (PIPELINE_ATTENTION); the denoiser's output is unchanged."""
    step, level = run["steps"][STEP], target.noise_levels(STEPS)[STEP:STEP + 1]
    layers = [m for denoiser in denoisers(target) for m in denoiser.modules()
              if type(getattr(m, "processor", None)).__module__.startswith("guard.")]
    seen = []
    handles = [m.register_forward_pre_hook(lambda m, a, k: seen.append((m, a, k)), with_kwargs=True) for m in layers]
    try:
        with torch.no_grad(), target.capture_attention() as maps:
            out, _ = target.denoise(step["sample"], level, cond)
    finally:
        for handle in handles:
            handle.remove()
    assert len(maps) == len(seen) == target.num_attention_layers > 0
    frames = maps[0].shape[-1]
    recompute = PIPELINE_ATTENTION[target.family]
    with torch.no_grad():
        for m, (layer, args, kwargs) in zip(maps, seen):
            assert m.shape[-2:] == (frames, frames) and (m >= 0).all()
            assert torch.allclose(m.sum(-1), torch.ones(()), atol=1e-5)
            expected = recompute(layer, args, kwargs, layer.processor)
            assert m.shape == expected.shape and torch.allclose(m, expected, atol=1e-5), (m - expected).abs().max()
    assert torch.allclose(out, run["outputs"][STEP].float(), atol=1e-4)
    assert not target.attention_store.enabled and target.attention_store.maps == []


def test_generate_is_the_pipelines_output(target, run, photo):
    """`generate` hands the pipeline the photo as given at the target's size and length with its video
    options, reports each step, and its frames are the pipeline's own output_type="np" frames of the same
    seed in 8 bits; its latents are the pipeline's last ones without any padding frame (with any latent frame
    the pipeline puts back after its loop, `PIPELINE_FINAL_LATENTS`)."""
    video, (args, kwargs) = run["video"], run["call"]
    assert args[0].size == photo.size
    assert (kwargs["height"], kwargs["width"], kwargs["num_frames"]) == (target.height, target.width, target.num_frames)
    assert {name: kwargs[name] for name in target.generate_options if name in VIDEO_OPTIONS} == \
        {name: VIDEO_OPTIONS[name] for name in target.generate_options if name in VIDEO_OPTIONS}
    assert run["progress"] == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert video.frames.dtype == np.uint8 and video.frames.shape == (target.num_frames, target.height, target.width, 3)
    assert np.array_equal(video.frames, (run["own"] * 255).round().astype(np.uint8))
    last = run["steps"][-1]["prev_sample"]
    last = PIPELINE_FINAL_LATENTS.get(target.family, lambda target, run, last: last)(target, run, last)
    assert 0 <= last.shape[1] - video.latents.shape[1] < 2
    assert torch.equal(video.latents, last[:, -video.latents.shape[1]:].to(video.latents.dtype))
    assert video.settings["seed"] == SEED and video.settings["model"] == target.name


def test_expert_at_each_step(target, run, cond):
    """At the level of every pipeline step, `denoise` runs the denoiser the pipeline ran at that step (Wan
    2.2 A14B: the high-noise expert above its boundary, the low-noise one below; one denoiser elsewhere)."""
    called = []
    with torch.no_grad(), contextlib.ExitStack() as stack:
        for denoiser in denoisers(target):
            stack.callback(denoiser.register_forward_hook(lambda m, a, out: called.append(m)).remove)
        for k in range(STEPS):
            target.denoise(run["steps"][k]["sample"], target.noise_levels(STEPS)[k:k + 1], cond)
    assert called == run["experts"]


def test_noise_levels(target):
    """Seeded draws; fraction 1 is the level the pipeline starts from; a higher fraction, more noise;
    a range outside [0, 1] is refused."""
    draw = lambda low, high: target.sample_noise_level(64, torch.Generator().manual_seed(0), low, high)  # noqa: E731
    assert torch.equal(draw(0.2, 0.4), draw(0.2, 0.4))
    assert torch.allclose(draw(1.0, 1.0).float(), target.noise_levels(STEPS)[0].float().expand(64), rtol=1e-5)
    assert draw(0.0, 0.1).max() < draw(0.9, 1.0).min()
    for low, high in [(-0.1, 0.5), (0.5, 1.5), (0.7, 0.3)]:
        with pytest.raises(ValueError, match=f"low={low}, high={high}"):
            target.sample_noise_level(1, None, low, high)


def test_gradients_reach_the_photo(target, photo):
    """Every differentiable quantity (each conditioning tensor, the denoiser's output and x0, the
    attention maps) has a finite, non-zero gradient with respect to the full-size photo the working-size
    image was resized from (SVD's CLIP branch reads the photo itself)."""
    full = target.to_tensor(photo).requires_grad_(True)
    small = torch.nn.functional.interpolate(full, size=(target.height, target.width), mode="bilinear",
                                            antialias=True)
    g = torch.Generator().manual_seed(0)
    cond = target.condition(with_photo(small, full), g)
    with torch.no_grad():
        clean = target.encode_video(torch.rand(1, target.num_frames, 3, target.height, target.width, generator=g))
    level = target.sample_noise_level(1, g, 0.3, 0.7)
    noisy = target.add_noise(clean, torch.randn(clean.shape, generator=g), level)
    with target.capture_attention() as maps:
        out, x0 = target.denoise(noisy, level, cond)
    quantities = {k: v for k, v in cond.items() if torch.is_tensor(v) and v.requires_grad}
    quantities |= {"denoiser output": out, "x0": x0, "attention": torch.stack([m.square().mean() for m in maps])}
    assert "image_latents" in quantities
    for name, value in quantities.items():
        (grad,) = torch.autograd.grad(value.float().square().mean(), full, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_prepare_image(target, photo):
    image = target.prepare_image(photo)
    assert image.size == (target.width, target.height) and image.mode == "RGB"
