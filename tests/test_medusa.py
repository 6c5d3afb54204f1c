"""MEDUSA (guard/methods/medusa.py): the nuclear norm's bounds, the layer and the noise level it reads,
the forward stopping after that layer, the loss going down, the budget, and its options."""

import math

import numpy as np
import pytest
import torch

from guard.methods import get_method
from guard.methods.medusa import medusa_layer, nuclear_norm
from guard.optimize import PGDConfig, protect
from guard.targets import TINY_MODELS

_cache = {}


def load(name):
    from guard.targets import load_target

    if name not in _cache:
        _cache[name] = load_target(name)
    return _cache[name]


def working_image(target, photo):
    return target.to_tensor(target.prepare_image(photo))


# -- the loss ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", [2, 4, 8, 25])
def test_nuclear_norm_bounds_on_row_stochastic_maps(f):
    """||A||_* >= ||A||_2 >= ||A 1|| / ||1|| = 1 for rows on the simplex, with equality only at the uniform
    map; a rank-1 map 1 p^T has sqrt(F) ||p||_2; the identity (each frame attends to itself) has F, the
    most (||A||_* <= sqrt(F) ||A||_F <= F)."""
    uniform = torch.full((1, f, f), 1.0 / f)
    identity = torch.eye(f)[None]
    assert nuclear_norm(uniform) == pytest.approx(1.0, abs=1e-5)
    assert nuclear_norm(identity) == pytest.approx(f, abs=1e-4)
    g = torch.Generator().manual_seed(f)
    p = torch.rand(f, generator=g).softmax(0)
    rank1 = p.expand(f, f)[None]  # every frame attends alike, with weights p
    assert nuclear_norm(rank1) == pytest.approx(math.sqrt(f) * float(p.norm()), rel=1e-4)
    one_hot = torch.zeros(1, f, f)
    one_hot[..., 0] = 1  # every frame copies frame 0: rank 1, but not the minimum
    assert nuclear_norm(one_hot) == pytest.approx(math.sqrt(f), rel=1e-5)
    assert 1.0 < float(nuclear_norm(rank1)) <= float(nuclear_norm(one_hot)) < f
    maps = torch.rand(64, f, f, generator=g).mul(4).softmax(-1)  # random attention maps
    norms = torch.linalg.svdvals(maps).sum(-1)
    assert (norms >= 1 - 1e-5).all() and (norms <= f + 1e-4).all()
    assert float(nuclear_norm(maps)) == pytest.approx(float(norms.mean()), rel=1e-6)  # the mean over maps


def test_nuclear_norm_gradient_is_finite_at_the_uniform_map():
    """At the minimum every singular value but one is 0 (repeated): svdvals' gradient stays finite."""
    a = torch.full((3, 6, 6), 1.0 / 6, requires_grad=True)
    (grad,) = torch.autograd.grad(nuclear_norm(a), a)
    assert torch.isfinite(grad).all()


# -- what it reads -------------------------------------------------------------------------------------
def svd_structured_unet():
    """A small UNet with the block structure of SVD's (four down blocks, the first three with
    attention, two layers each), to check the mapping of sgm's input_blocks[5]."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    return UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 32, 64, 64), layers_per_block=2, sample_size=8, in_channels=8, out_channels=4,
        cross_attention_dim=8, num_attention_heads=(1, 2, 2, 2), projection_class_embeddings_input_dim=24,
        addition_time_embed_dim=8, num_frames=3)


def test_medusa_block_is_down_blocks_1_attention_1_on_svd():
    """sgm's input_blocks[5] (level 1, second res + attention block) is diffusers' down_blocks[1].attentions[1]:
    the 4th temporal attn1 the forward runs (of 16), checked by running the UNet with hooks."""
    from types import SimpleNamespace

    unet = svd_structured_unet()
    order = []
    for name, module in unet.named_modules():
        if "temporal_transformer_blocks" in name and name.endswith(".attn1"):
            module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
    with torch.no_grad():
        unet(torch.randn(1, 3, 8, 8, 8), torch.tensor([1.0]), torch.randn(1, 1, 8),
             added_time_ids=torch.zeros(1, 3))
    assert len(order) == 16
    fake = SimpleNamespace(denoiser=unet, num_attention_layers=16)
    layer = medusa_layer(fake)
    assert layer == 4
    assert order[layer - 1] == "down_blocks.1.attentions.1.temporal_transformer_blocks.0.attn1"


def test_medusa_block_on_the_embedded_model():
    """The embedded model's first down block has no attention and each block one layer: MEDUSA's level
    (half the latent size) is down_blocks[1].attentions[0], the first temporal layer."""
    target = load("embedded")
    assert medusa_layer(target) == 1
    assert len(target.denoiser.down_blocks[1].attentions) == 1
    assert not hasattr(target.denoiser.down_blocks[0], "attentions")


def started_modules(target, method, x):
    """Names of the denoiser's top-level stages that started during one loss call."""
    started = []
    d = target.denoiser
    stages = ([(f"down_blocks.{i}", b) for i, b in enumerate(d.down_blocks)] + [("mid_block", d.mid_block)]
              + [(f"up_blocks.{i}", b) for i, b in enumerate(d.up_blocks)] + [("conv_out", d.conv_out)]
              if hasattr(d, "down_blocks") else
              [(f"blocks.{i}", b) for i, b in enumerate(getattr(d, "transformer_blocks", None) or d.blocks)]
              + [("proj_out", d.proj_out)])
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: started.append(name))
               for name, module in stages]
    try:
        terms = method.loss(target, x, torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()
    return started, terms


@pytest.mark.parametrize("target_name, layer, expected", [
    ("tiny-svd", None, ["down_blocks.0"]),  # layer 2 = down_blocks[0].attentions[1]: nothing after it runs
    ("tiny-cogvideox", 1, ["blocks.0"]),
    ("tiny-cogvideox", None, ["blocks.0", "blocks.1"]),  # 2 blocks: the last one, and not proj_out
    ("tiny-wan", 1, ["blocks.0"]),
])
def test_forward_stops_after_the_layer_read(target_name, layer, expected, photo):
    target = load(target_name)
    method = get_method("medusa", layer=layer)
    x = working_image(target, photo)
    method.setup(target, x, torch.Generator().manual_seed(0))
    started, terms = started_modules(target, method, x.clone().requires_grad_(True))
    assert started == expected
    assert target.attention_store.seen == method.read  # StopForward was raised right after that layer
    assert torch.isfinite(terms["loss"])


@pytest.mark.parametrize("target_name", ["tiny-svd", "tiny-cogvideox", "tiny-wan"])
@pytest.mark.parametrize("params, steps, step", [({}, 25, 4), ({"video_steps": 10, "video_step": 0}, 10, 0)])
def test_level_is_the_step_of_the_schedule(target_name, params, steps, step, photo, monkeypatch):
    """Default: the level of step 4 of a 25-step schedule (SVD: sigma 244.02, sgm's EDM sigmas[4])."""
    target = load(target_name)
    seen = []
    denoise = target.denoise

    def recording(noisy, level, cond, maps_only=False):
        seen.append(level.clone())
        return denoise(noisy, level, cond, maps_only=maps_only)

    monkeypatch.setattr(target, "denoise", recording)
    method = get_method("medusa", **params)
    x = working_image(target, photo)
    method.setup(target, x, torch.Generator().manual_seed(0))
    method.loss(target, x, torch.Generator().manual_seed(0))
    assert len(seen) == 1 and torch.equal(seen[0], target.noise_levels(steps)[step].reshape(1))
    if target.family == "svd" and steps == 25:
        ramp = torch.linspace(0, 1, 25)  # sgm's EDMDiscretization(sigma_max=700), MEDUSA's sigmas[4]
        sgm = (700 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 700 ** (1 / 7))) ** 7
        assert float(seen[0]) == pytest.approx(float(sgm[4]), rel=1e-5)


def test_fixed_draw_gives_the_same_loss_every_step(photo):
    """noise_draws=1 (MEDUSA's fixed seed): the whole denoiser input, noise augmentation included, is the
    same at every step; None draws afresh."""
    target = load("tiny-svd")
    x = working_image(target, photo)
    fixed = get_method("medusa")
    fixed.setup(target, x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    a, b = (float(fixed.loss(target, x, g)["loss"]) for _ in range(2))
    assert a == b
    fresh = get_method("medusa", noise_draws=None)
    fresh.setup(target, x, torch.Generator().manual_seed(0))
    c, d = (float(fresh.loss(target, x, g)["loss"]) for _ in range(2))
    assert c != d


@pytest.mark.parametrize("target_name", sorted(TINY_MODELS))
def test_runs_on_every_family(target_name, photo):
    """One loss step on each tiny model: finite, reads one map of its layer, reaches the image."""
    target = load(target_name)
    method = get_method("medusa")
    x = working_image(target, photo)
    method.setup(target, x, torch.Generator().manual_seed(0))
    x_adv = x.clone().requires_grad_(True)
    terms = method.loss(target, x_adv, torch.Generator().manual_seed(0))
    assert 1 - 1e-4 <= float(terms["loss"].detach()) <= target.num_frames  # within [1, F] (latent frames: fewer)
    (grad,) = torch.autograd.grad(terms["loss"], x_adv)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# -- the attack ----------------------------------------------------------------------------------------
def test_loss_goes_down_and_the_budget_holds(photo):
    """A few PGD steps on tiny-svd at MEDUSA's loop settings (step 2.55/255, no random start) lower the
    nuclear norm at the fixed draw it optimised; the saved image stays within eps of the photo."""
    target = load("tiny-svd")
    method = get_method("medusa")
    config = PGDConfig(eps=8 / 255, steps=6, step_size=0.01, random_start=False, seed=0, working_size=True)
    result = protect(target, photo, method, config)
    clean, guarded = (target.to_tensor(image) for image in (result.original, result.image))
    method.setup(target, clean, torch.Generator(target.device).manual_seed(0))  # the draw protect used
    before = float(method.loss(target, clean, torch.Generator())["loss"])
    after = float(method.loss(target, guarded, torch.Generator())["loss"])
    assert before == pytest.approx(result.history["loss"][0], rel=1e-5)
    assert after < before, (before, after, result.history["loss"])
    diff = np.abs(np.asarray(result.image, dtype=np.int16) - np.asarray(result.original, dtype=np.int16))
    assert 0 < diff.max() <= 8


def test_full_size_budget(photo):
    target = load("tiny-svd")
    result = protect(target, photo, get_method("medusa"), PGDConfig(eps=4 / 255, steps=2, seed=3))
    diff = np.abs(np.asarray(result.image, dtype=np.int16) - np.asarray(result.original, dtype=np.int16))
    assert result.image.size == photo.size and 0 < diff.max() <= 4


# -- options -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, name", [
    ({"nope": 1}, "nope"),
    ({"layer": 0}, "layer"), ({"layer": 2.0}, "layer"), ({"layer": True}, "layer"),
    ({"video_step": -1}, "video_step"), ({"video_step": "4"}, "video_step"),
    ({"video_step": 25}, "video_step"), ({"video_steps": 4, "video_step": 4}, "video_step"),
    ({"video_steps": 0}, "video_steps"), ({"frames": 1}, "frames"), ({"noise_draws": 0}, "noise_draws"),
])
def test_bad_options_name_the_field(params, name):
    with pytest.raises(ValueError, match=name):
        get_method("medusa", **params)


def test_layer_beyond_the_model_names_the_field(photo):
    target = load("tiny-svd")
    method = get_method("medusa", layer=target.num_attention_layers + 1)
    with pytest.raises(ValueError, match=r"layer must be at most 6 .*got 7"):
        method.setup(target, working_image(target, photo), torch.Generator().manual_seed(0))
