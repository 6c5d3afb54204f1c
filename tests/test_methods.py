"""Protection methods on the tiny targets: the budget, determinism, and each loss moving its way."""

import io as _io

import numpy as np
import PIL.Image
import pytest
import torch

from guard.methods import METHODS, get_method
from guard.methods.base import attention_distance, attention_energy
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
    saved = np.asarray(PIL.Image.open(path), dtype=np.int16)
    original = np.asarray(a.original, dtype=np.int16)
    assert saved.shape == original.shape and saved.dtype == np.int16
    assert np.abs(saved - original).max() <= 4  # the bound holds on the saved 8-bit PNG
    assert np.abs(saved - original).max() > 0  # and it changed the image
    assert png_bytes(a.image) == png_bytes(b.image)  # same seed, byte-identical PNG
    assert np.array_equal(saved, np.asarray(a.image))  # the PNG is exactly what was optimised
    c = protect(target, photo, get_method(method_name), PGDConfig(eps=4 / 255, steps=2, seed=8))
    assert png_bytes(a.image) != png_bytes(c.image)
    assert a.settings["seed"] == 7 and a.settings["method"] == method_name and a.seconds > 0
    if a.history:
        assert all(len(v) == 2 for v in a.history.values())


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
    "photoguard": {"enc": "down"},
    "vidfreeze": {"attn_energy": "down"},
    "i2vguard": {"enc": "down", "att_distance": "up", "loss": "down"},
}


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("method_name", list(EXPECTED))
def test_loss_terms_move_their_way(target_name, method_name, photo):
    target = load(target_name)
    method = get_method(method_name)
    result = protect(target, photo, method, PGDConfig(eps=16 / 255, steps=8, seed=0))
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
    """Mean attention energy, and distance from the clean image's maps, at fixed noise draws."""
    from guard.methods.base import static_video_latents

    x = target.to_tensor(image)
    energies, reference = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        ref = static_video_latents(target, x, target.num_frames)
        level = target.sample_noise_level(1, g)
        noisy = target.add_noise(ref, torch.randn(ref.shape, generator=g), level)
        with torch.no_grad(), target.capture_attention() as maps:
            target.denoise(noisy, level, target.condition(x, g))
        energies.append(float(attention_energy(maps)))
        reference.append((noisy, level, maps))
    return np.mean(energies), reference


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
    """At the same eps, Vid-Freeze lowers the attention energy and I2VGuard raises the attention
    distance by a measured margin over uniform noise."""
    target = load(target_name)
    config = PGDConfig(eps=16 / 255, steps=10, seed=0)
    clean_energy, reference = attention_stats(target, target.prepare_image(photo))
    noise = protect(target, photo, get_method("noise"), config).image
    freeze = protect(target, photo, get_method("vidfreeze"), config).image
    guard = protect(target, photo, get_method("i2vguard", tau2=2.0), config).image
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
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")
    with pytest.raises(ValueError, match="target"):
        from guard.methods.base import target_image

        target_image("blue", torch.zeros(1, 3, 8, 8))
