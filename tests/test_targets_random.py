"""The full-size random-weight builders (`guard.targets.RANDOM_MODELS`): every name resolves to a builder
of its family's module, and the pipeline it builds has the published model's size. Built on the meta
device (shapes without memory), so the 14B models cost nothing here; the target itself is never made
(its constructor encodes the prompt, which meta tensors cannot run)."""

import importlib.util

import pytest
import torch

from guard.targets import FAMILIES, RANDOM_MODELS, load_target

#: parameters of each model's denoiser (per expert), with where the figure comes from. Tolerance: TOLERANCE.
PUBLISHED = {
    # the SVD-XT UNet: 1.52B (its fp16 unet weights, 3.05 GB)
    "random-svd-xt": 1.52e9,
    # CogVideoX-5b-I2V's transformer: 5.57B (its bf16 transformer weights, about 11.1 GB; the name rounds to 5B)
    "random-cogvideox": 5.57e9,
    # Wan 2.1 I2V 14B: the 14B backbone (Wan 2.1 report: 40 layers, 5120 wide, ffn 13824) plus the image
    # cross-attention: 16.4B (its fp16 transformer weights, 32.8 GB)
    "random-wan2.1-i2v-14b": 16.4e9,
    # Wan 2.2 I2V A14B: "A14B" = 14B active of two experts, 14.3B each (a bf16 expert is 28.6 GB)
    "random-wan2.2-i2v-a14b": 14.3e9,
    # Wan 2.2 TI2V-5B: 5B
    "random-wan2.2-ti2v-5b": 5.0e9,
    # LTX-Video 0.9.x: 2B (the model card's figure; 28 layers, 2048 wide)
    "random-ltx-video": 1.9e9,
}
TOLERANCE = 0.05

#: experts per model (the others have one denoiser)
EXPERTS = {"random-wan2.2-i2v-a14b": 2}


class Built(Exception):
    """Raised in place of the target's constructor: carries the pipeline the builder made."""


def family_module_exists(name: str) -> bool:
    family = FAMILIES[RANDOM_MODELS[name]]
    return importlib.util.find_spec(f"guard.targets.{family.module}") is not None


def names():
    for name in RANDOM_MODELS:
        missing = pytest.mark.skip(f"{name}: its family's module is not written yet")
        marks = () if family_module_exists(name) else missing
        yield pytest.param(name, marks=marks)


def test_every_random_model_has_a_published_size():
    assert set(RANDOM_MODELS) == set(PUBLISHED)


@pytest.mark.parametrize("name", names())
def test_builder_resolves(name):
    family = FAMILIES[RANDOM_MODELS[name]]
    builder = family.load(family.random[name])
    assert callable(builder)


def built_pipeline(name, monkeypatch):
    """The pipeline `load_target(name)` builds on the meta device (the target's constructor intercepted)."""
    target_class = FAMILIES[RANDOM_MODELS[name]].target_class

    def intercept(self, pipe, *args, **kwargs):
        raise Built(pipe)

    monkeypatch.setattr(target_class, "__init__", intercept)
    with pytest.raises(Built) as built:
        load_target(name, device="meta", dtype=torch.bfloat16)
    return built.value.args[0]


@pytest.mark.parametrize("name", names())
def test_published_parameter_count(name, monkeypatch):
    """Each denoiser (expert) has the published model's parameter count within TOLERANCE, and the whole
    pipeline is on the device it was asked for, its denoisers in the dtype asked for."""
    pipe = built_pipeline(name, monkeypatch)
    denoisers = [getattr(pipe, key) for key in ("unet", "transformer", "transformer_2")
                 if getattr(pipe, key, None) is not None]
    assert len(denoisers) == EXPERTS.get(name, 1)
    for denoiser in denoisers:
        count = sum(p.numel() for p in denoiser.parameters())
        assert abs(count / PUBLISHED[name] - 1) < TOLERANCE, (name, f"{count / 1e9:.3f}B")
        # most of the weights in the dtype asked for (Wan keeps its norms and embeddings in float32, as
        # from_pretrained does)
        low = sum(p.numel() for p in denoiser.parameters() if p.dtype == torch.bfloat16)
        assert low > 0.95 * count
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            assert all(p.device.type == "meta" for p in component.parameters())
