"""Protection methods on the tiny targets: the budget, determinism, and each loss moving its way."""

import io as _io
import re

import numpy as np
import PIL.Image
import pytest
import torch

from guard.methods import METHODS, get_method
from guard.methods.base import attention_distance
from guard.optimize import PGDConfig, protect, quantize

TARGETS = ["tiny-svd", "tiny-cogvideox"]
_cache = {}


def load(name):
    from guard.targets import load_target

    if name not in _cache:
        _cache[name] = load_target(name)
    return _cache[name]


def png_bytes(image):
    buffer = _io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("method_name", list(METHODS))
def test_budget_and_determinism(target_name, method_name, photo, tmp_path):
    target = load(target_name)
    config = PGDConfig(eps=4 / 255, steps=2, seed=7)
    a = protect(target, photo, get_method(method_name), config)
    b = protect(target, photo, get_method(method_name), config)
    from guard.io import save_png

    path = save_png(a.image, tmp_path / "guarded.png")
    # an 8-bit PNG: Pillow reads a 16-bit one as 8-bit "RGB" too, so its header is read (signature,
    # IHDR: width, height, then bit depth 8 and colour type 2 = RGB)
    header = path.read_bytes()[:26]
    assert header[12:16] == b"IHDR" and header[24:26] == bytes([8, 2]), header[24:26]
    saved = np.asarray(PIL.Image.open(path), dtype=np.int16)
    original = np.asarray(a.original, dtype=np.int16)
    assert saved.shape == original.shape  # the photo's size, three channels
    assert np.abs(saved - original).max() <= 4  # the bound holds on the saved 8-bit PNG
    assert np.abs(saved - original).max() > 0  # and it changed the image
    assert png_bytes(a.image) == png_bytes(b.image)  # same seed, byte-identical PNG
    assert np.array_equal(saved, np.asarray(a.image))  # the PNG is exactly what was optimised
    c = protect(target, photo, get_method(method_name), PGDConfig(eps=4 / 255, steps=2, seed=8))
    assert png_bytes(a.image) != png_bytes(c.image)
    assert a.settings["seed"] == 7 and a.settings["method"] == method_name and a.seconds > 0
    if a.history:
        assert all(len(v) == 2 for v in a.history.values())


@pytest.mark.parametrize("params, distribution", [({}, "sign"), ({"distribution": "uniform"}, "uniform")])
def test_noise_control(photo, params, distribution):
    """The default control moves every pixel channel by exactly eps (what a saturated sign attack
    spends), except where [0, 255] clips it; the uniform one stays an option."""
    target = load("tiny-svd")
    result = protect(target, photo, get_method("noise", **params), PGDConfig(eps=6 / 255, seed=1))
    delta, original = np.abs(result.perturbation()), np.asarray(result.original, dtype=int)
    room = np.minimum(original, 255 - original)  # how far a pixel can move before clipping
    if distribution == "sign":
        guarded = np.asarray(result.image, dtype=int)
        assert (delta[room >= 6] == 6).all() and delta.max() == 6
        assert np.isin(guarded[delta < 6], (0, 255)).all()  # moved less only where [0, 255] clipped it
    else:
        assert delta.max() <= 6 and 2.5 < delta[room >= 6].mean() < 3.5
    assert result.method == "noise" and not result.history
    with pytest.raises(ValueError, match="distribution"):
        get_method("noise", distribution="gaussian")


@pytest.mark.parametrize("method_name", ["freeze", "vidfreeze", "i2vguard", "photoguard"])
def test_zero_steps_is_refused(photo, method_name):
    """0 steps of a gradient method would return the random start (the noise control) under the
    method's name: refused, with a sentence naming the control."""
    with pytest.raises(ValueError, match="at least 1 step.*noise"):
        protect(load("tiny-svd"), photo, get_method(method_name), PGDConfig(steps=0))


def test_maps_are_released_after_a_protection(photo):
    """The store keeps no maps once a protection is done (a served app would hold them in GPU memory)."""
    for name in TARGETS:
        target = load(name)
        protect(target, photo, get_method("vidfreeze"), PGDConfig(steps=1))
        assert target.attention_store.maps == [] and not target.attention_store.enabled


def test_i2vguard_clean_video_comes_from_the_protection_seed(photo):
    """V0 is generated with the protection's own seed: a different protection seed, a different V0."""
    target = load("tiny-svd")
    x = target.to_tensor(target.prepare_image(photo))
    method = get_method("i2vguard", video_steps=2)
    method.setup(target, x, torch.Generator().manual_seed(7))
    expected = target.generate(target.prepare_image(photo), seed=7, num_inference_steps=2, return_latents=True)
    assert torch.equal(method.X0, expected.latents)
    method.setup(target, x, torch.Generator().manual_seed(8))
    assert not torch.equal(method.X0, expected.latents)


def test_random_transform_draws_what_it_says():
    """JPEG quality 60..95 (both ends reached), resize 0.5..1, crop 0.8..1; one transformation does the
    same to every image and every frame of a video."""
    from guard.optimize import Transform, random_transform

    g = torch.Generator().manual_seed(0)
    draws = [random_transform(g) for _ in range(1500)]
    qualities = {t.quality for t in draws if t.kind == "jpeg"}
    assert min(qualities) == 60 and max(qualities) == 95
    assert all(0.5 <= t.scale < 1 for t in draws if t.kind == "resize")
    assert all(0.8 <= t.frac < 1 for t in draws if t.kind == "crop")
    assert {t.kind for t in draws} == {"jpeg", "resize", "crop"}
    frames = torch.rand(1, 3, 3, 32, 48, generator=g)
    crop = Transform("crop", frac=0.85, top=0.3, left=0.7)
    for t in (crop, Transform("resize", scale=0.6), Transform("jpeg", quality=70)):
        video = t(frames)
        assert video.shape == frames.shape
        assert all(torch.allclose(video[:, i], t(frames[:, i]), atol=1e-6) for i in range(3))


@pytest.mark.parametrize("target_name", TARGETS)
def test_robust_references_are_transformed_alike(target_name, photo):
    """In robust mode a transformed guarded image is compared with references of the clean image under
    the same transformation: at the clean image itself, a crop moves nothing (distance 0; comparing
    with untransformed references would read the crop as an attack)."""
    from guard.optimize import Transform

    if target_name == "tiny-svd":  # without noise augmentation, so that both sides are deterministic
        from guard.targets.svd import tiny_svd

        target = tiny_svd(noise_aug_strength=0.0)
    else:
        target = load(target_name)
    x = target.to_tensor(target.prepare_image(photo))
    method = get_method("i2vguard", video_steps=2, noise_draws=1)
    method.setup(target, x, torch.Generator().manual_seed(0))
    crop = Transform("crop", frac=0.85, top=0.5, left=0.5)
    with torch.no_grad():
        terms = method.loss(target, x, torch.Generator().manual_seed(1), crop)
    assert float(terms["att_distance"]) < 1e-10 and float(terms["image"]) == 0.0


def test_quantize_respects_fractional_budget():
    x = torch.full((1, 3, 4, 4), 100 / 255)
    x_adv = x + 5.4 / 255
    assert np.abs(quantize(x_adv, x, 5.4 / 255).astype(int) - 100).max() == 5
    assert quantize(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2), 8 / 255).max() == 255


def fixed_terms(method, target, x, seed=123):
    """The method's loss terms at a fixed noise draw (the same draw for every image compared)."""
    with torch.no_grad():
        return {k: float(v) for k, v in method.loss(target, x, torch.Generator().manual_seed(seed)).items()}


# which way each term must go when its method optimises (measured at fixed draws, before vs after)
EXPECTED = {
    "freeze": {"still_distance": "down"},
    "photoguard": {"enc": "down"},
    "vidfreeze": {"attn_energy": "down"},
    "medusa": {"nuclear_norm": "down"},
    "i2vguard": {"enc": "down", "att_distance": "up", "loss": "down"},
}


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("method_name", list(EXPECTED))
def test_loss_terms_move_their_way(target_name, method_name, photo):
    target = load(target_name)
    # fresh draws from the generator (not draws fixed at setup), so that before and after see the same ones
    method = get_method(method_name, **({"noise_draws": None, "buckets": None} if method_name == "freeze" else {}))
    # at the working size, so that the images measured are the ones optimised (full size: test_fullsize.py)
    result = protect(target, photo, method, PGDConfig(eps=16 / 255, steps=8, seed=0, working_size=True))
    method.setup(target, target.to_tensor(result.original), torch.Generator().manual_seed(0))
    before = [fixed_terms(method, target, target.to_tensor(result.original), s) for s in range(3)]
    after = [fixed_terms(method, target, target.to_tensor(result.image), s) for s in range(3)]
    for term, direction in EXPECTED[method_name].items():
        b = np.mean([t[term] for t in before])
        a = np.mean([t[term] for t in after])
        assert (a < b) if direction == "down" else (a > b), f"{term}: {b:.5g} -> {a:.5g}, expected {direction}"


@pytest.mark.parametrize("target_name", TARGETS)
def test_each_i2vguard_term_reaches_the_image(target_name, photo):
    target = load(target_name)
    method = get_method("i2vguard", tau1=10.0, tau2=10.0)  # hinges active, so every term has a gradient
    x = target.to_tensor(target.prepare_image(photo))
    method.setup(target, x, torch.Generator().manual_seed(0))
    x_adv = (x + 2 / 255).clamp(0, 1).requires_grad_(True)
    terms = method.loss(target, x_adv, torch.Generator().manual_seed(0))
    for name in ["enc", "con", "att", "image"]:
        (grad,) = torch.autograd.grad(terms[name], x_adv, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def attention_stats(target, image, seeds=range(4)):
    """Mean attention energy at fixed noise draws, and the draws (to measure distances from these maps)."""
    from guard.methods.vidfreeze import attention_at_draws

    energies, draws = attention_at_draws(target, target.to_tensor(image), seeds)
    return np.mean(energies), draws


def distance_from(target, image, reference, seeds=range(4)):
    x = target.to_tensor(image)
    out = []
    for s, (noisy, level, ref_maps) in zip(seeds, reference):
        with torch.no_grad(), target.capture_attention() as maps:
            target.denoise(noisy, level, target.condition(x, torch.Generator().manual_seed(s)))
        out.append(float(attention_distance(maps, ref_maps)))
    return np.mean(out)


@pytest.mark.parametrize("target_name", TARGETS)
def test_effect_against_noise_control(target_name, photo):
    """At the same eps, Vid-Freeze lowers the attention energy and I2VGuard's temporal attack raises the
    attention distance by a measured margin over the full-budget (+-eps) noise control.

    The temporal attack alone (alpha = beta = 0): the full I2VGuard loss balances it against its encoder
    and diffusion terms, and on tiny-svd its attention distance is only 1.3x the control's (measured;
    2x the weaker uniform control's). That the full loss goes down is test_loss_terms_move_their_way."""
    target = load(target_name)
    config = PGDConfig(eps=16 / 255, steps=10, seed=0, working_size=True)  # full size: test_fullsize.py
    clean_energy, reference = attention_stats(target, target.prepare_image(photo))
    noise = protect(target, photo, get_method("noise"), config).image
    freeze = protect(target, photo, get_method("vidfreeze"), config).image
    guard = protect(target, photo, get_method("i2vguard", tau2=2.0, alpha=0.0, beta=0.0), config).image
    noise_energy, _ = attention_stats(target, noise)
    freeze_energy, _ = attention_stats(target, freeze)
    drop_noise, drop_freeze = clean_energy - noise_energy, clean_energy - freeze_energy
    assert drop_freeze > 0 and drop_freeze > 2 * abs(drop_noise), (clean_energy, noise_energy, freeze_energy)
    d_noise, d_guard = distance_from(target, noise, reference), distance_from(target, guard, reference)
    assert d_guard > 2 * d_noise, (d_noise, d_guard)


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="eps"):
        PGDConfig(eps=2.0)
    with pytest.raises(ValueError, match="steps"):
        PGDConfig(steps=-1)
    with pytest.raises(ValueError, match="views"):
        PGDConfig(views=("pipeline", "squash"))
    with pytest.raises(ValueError, match="scales"):
        PGDConfig(scales=(1.1, 0.9))
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")
    with pytest.raises(ValueError, match="pull_toward"):
        from guard.methods.base import pull_toward_image

        pull_toward_image("blue", torch.zeros(1, 3, 8, 8))


NAN = float("nan")
BAD_NUMBER = [-0.1, -1, "1", None, NAN, True]  # a loss weight or a hinge threshold
# per option, values refused: out of range, a wrong type (a string would otherwise fail a comparison
# with a TypeError), a bool for an int, NaN (which fails no `<` test)
BAD = {
    "t_range": [(0.5, 2.0), (0.8, 0.2), (-0.1, 0.5), (0.5,), (0.1, 0.5, 0.9), ("0", 1), "0,1", None, NAN,
                (NAN, 1.0)],
    "frames": [1, 0, -3, 2.5, "8", True],
    "noise_draws": [0, -1, 1.5, "4", True],
    "buckets": [(0, 256), (-1, 10), (200, 100), (0.5, 10), ("64", 255), "64,255", (64,), 127],
    "layers": [0, -1, 2.0, "4", False],
    "layer": [0, -1, 2.0, "4", False],
    "video_step": [-1, 1.5, "4", True, None],
    "video_steps": [0, 1.5, "6", True],
    "tau1": BAD_NUMBER, "tau2": BAD_NUMBER,
    "alpha": BAD_NUMBER, "beta": BAD_NUMBER, "gamma": BAD_NUMBER, "lam_image": BAD_NUMBER,
    "pull_toward": ["blue", "Gray", None, 0],
    "distribution": ["gaussian", None, 1],
}


def test_every_option_is_checked():
    """Every option of every method has a check in OPTIONS (one per name, shared by the methods that
    have it) and bad values in BAD below: a new option cannot go unchecked."""
    from dataclasses import fields

    from guard.methods.base import OPTIONS

    assert set(BAD) == set(OPTIONS)
    for name, cls in METHODS.items():
        unchecked = {f.name for f in fields(cls)} - set(OPTIONS)
        assert not unchecked, f"{name}: {unchecked} not in OPTIONS"


@pytest.mark.parametrize("method_name, field, value", [
    pytest.param(name, f, value, id=f"{name}-{f}={value!r}")
    for name, cls in METHODS.items() for f in cls.__dataclass_fields__ for value in BAD[f]])
def test_bad_option_names_the_field_range_and_value(method_name, field, value):
    with pytest.raises(ValueError) as raised:
        get_method(method_name, **{field: value})
    # "<field> must be <what it accepts>, got <the value>"
    assert re.fullmatch(rf"{field} must be .+, got {re.escape(repr(value))}", str(raised.value)), raised.value


def preset_cases():
    """(method, params) of every preset, family-specific ones included, and each method's defaults."""
    from guard.presets import FAST_BY_FAMILY, PRESETS

    cases = [(name, "defaults", {}) for name in METHODS]
    cases += [(name, preset, params) for name, presets in PRESETS.items() for preset, (_, params) in presets.items()]
    cases += [(name, f"fast-{family}", params)
              for family, presets in FAST_BY_FAMILY.items() for name, (_, params) in presets.items()]
    return [pytest.param(name, params, id=f"{name}-{preset}") for name, preset, params in cases]


@pytest.mark.parametrize("method_name, params", preset_cases())
def test_defaults_and_presets_are_accepted(method_name, params):
    method = get_method(method_name, **params)
    assert all(getattr(method, k) == v for k, v in params.items())


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("buckets, expected", [((5, 5), {"motion_bucket_id": 5}), (None, {})])
def test_freeze_hands_its_motion_bucket_to_the_target(target_name, photo, monkeypatch, buckets, expected):
    """Freeze draws a motion bucket whenever `buckets` is set and hands it to the target's condition,
    whatever the family (one with no motion bucket ignores it: the target's business, so the recording
    below does not pass it on); with None it hands none (the model's own)."""
    target = load(target_name)
    calls, condition = [], target.condition

    def recording(image, generator=None, **options):
        calls.append(options)
        return condition(image, generator)

    monkeypatch.setattr(target, "condition", recording)
    protect(target, photo, get_method("freeze", buckets=buckets, noise_draws=1), PGDConfig(steps=1))
    assert calls and all(options == expected for options in calls), calls  # every setup's and step's call
