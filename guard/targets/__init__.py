"""Model families and the names that load them. Adding a family = one file + one entry in `FAMILIES`.

A family is the diffusers pipeline class its models load with (the `_class_name` of a model's
model_index.json) and the module under guard/targets that attacks it: its `Target` subclass and its tiny
random-weight builders (CPU tests; `tests/test_targets.py` runs every contract check on each of them).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .base import Target, Video

EMBEDDED_PATH = Path(__file__).resolve().parent.parent / "models" / "embedded"


@dataclass(frozen=True)
class Family:
    """One image-to-video model family. Its module is imported on first use (it imports diffusers)."""

    pipeline: str  # the diffusers pipeline class name its models load with, e.g. "StableVideoDiffusionPipeline"
    module: str  # its module under guard/targets, e.g. "svd"
    target: str  # the name of its Target subclass in that module
    models: dict[str, str] = field(default_factory=dict)  # names a user may type -> hub id or local folder
    tiny: dict[str, str] = field(default_factory=dict)  # tiny model names -> builder function in the module
    #: full-size models with random weights -> builder function in the module: the real architectures
    #: and sizes for GPU benchmarks and the app's GPU run (timing depends on shapes, not weights); never
    #: offered to visitors, loaded only by name (GUARD_MODELS, --model)
    random: dict[str, str] = field(default_factory=dict)

    def load(self, attribute: str):
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), attribute)

    @property
    def target_class(self) -> type[Target]:
        return self.load(self.target)


FAMILIES = {
    "svd": Family("StableVideoDiffusionPipeline", "svd", "SVDTarget",
                  models={"embedded": str(EMBEDDED_PATH), "svd": "stabilityai/stable-video-diffusion-img2vid",
                          "svd-xt": "stabilityai/stable-video-diffusion-img2vid-xt"},
                  tiny={"tiny-svd": "tiny_svd"}, random={"random-svd-xt": "random_svd_xt"}),
    "cogvideox": Family("CogVideoXImageToVideoPipeline", "cogvideox", "CogVideoXTarget",
                        models={"cogvideox": "THUDM/CogVideoX-5b-I2V"},
                        tiny={"tiny-cogvideox": "tiny_cogvideox", "tiny-cogvideox15": "tiny_cogvideox15"},
                        random={"random-cogvideox": "random_cogvideox"}),
    "wan": Family("WanImageToVideoPipeline", "wan", "WanTarget",
                  models={"wan2.1-i2v-14b": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                          "wan2.2-i2v-a14b": "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
                          "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers"},
                  tiny={"tiny-wan": "tiny_wan", "tiny-wan-moe": "tiny_wan_moe", "tiny-wan-ti2v": "tiny_wan_ti2v"},
                  random={"random-wan2.1-i2v-14b": "random_wan21_i2v_14b", "random-wan2.2-i2v-a14b": "random_wan22_i2v_a14b",
                          "random-wan2.2-ti2v-5b": "random_wan22_ti2v_5b"}),
    "ltx": Family("LTXImageToVideoPipeline", "ltx", "LTXTarget", models={"ltx-video": "Lightricks/LTX-Video"},
                  tiny={"tiny-ltx": "tiny_ltx"}, random={"random-ltx-video": "random_ltx_video"}),
}

#: tiny random-weight models (built offline, for tests) -> their family
TINY_MODELS = {name: family for family, entry in FAMILIES.items() for name in entry.tiny}
#: names a user may type, with what they load (hub ids load only where a hub is reachable; None: built
#: in memory). The app and the CLI offer its keys.
MODELS = {name: path for entry in FAMILIES.values() for name, path in entry.models.items()} | dict.fromkeys(TINY_MODELS)
#: full-size random-weight models (GPU benchmarks) -> their family; loadable by name, not in MODELS
RANDOM_MODELS = {name: family for family, entry in FAMILIES.items() for name in entry.random}
DEFAULT_MODEL = "embedded"


def family_of(path_or_id: str) -> str:
    """The family of a local diffusers folder or hub id, from its pipeline's `_class_name` (a folder's
    model_index.json; for a hub id, that one file, fetched where a hub is reachable). ValueError if the
    file cannot be read or names a pipeline no family loads."""
    from diffusers import DiffusionPipeline

    try:
        class_name = DiffusionPipeline.load_config(path_or_id).get("_class_name")
    except OSError as e:
        raise ValueError(f"model {path_or_id!r}: cannot read its model_index.json ({e})") from e
    for name, family in FAMILIES.items():
        if family.pipeline == class_name:
            return name
    known = ", ".join(family.pipeline for family in FAMILIES.values())
    raise ValueError(f"model {path_or_id!r} is a {class_name}; guard knows {known}")


def load_target(model: str = DEFAULT_MODEL, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Target:
    """Load a target by name (see `MODELS`; a named model knows its family), hub id or local diffusers
    folder (its family read from its model_index.json, `family_of`)."""
    if model in TINY_MODELS:
        family = FAMILIES[TINY_MODELS[model]]
        return family.load(family.tiny[model])(device=device, dtype=dtype)
    if model in RANDOM_MODELS:
        family = FAMILIES[RANDOM_MODELS[model]]
        return family.load(family.random[model])(device=device, dtype=dtype)
    path_or_id = MODELS.get(model, model)
    if path_or_id == str(EMBEDDED_PATH) and not (EMBEDDED_PATH / "model_index.json").is_file():
        raise ValueError(f"the embedded model is missing from {EMBEDDED_PATH}")
    local = os.path.isdir(path_or_id)
    if not local and "/" not in path_or_id:
        raise ValueError(f"unknown model {model!r}: use one of {', '.join(MODELS)}, a hub id or a local folder")
    named = next((name for name, family in FAMILIES.items() if model in family.models), None)
    family = FAMILIES[named or family_of(path_or_id)]
    # a local folder may carry guard_defaults.json: the target's defaults for that model (e.g. the
    # embedded model's size and denoising steps), keyword arguments of the target's constructor
    defaults = Path(path_or_id) / "guard_defaults.json"
    kwargs = json.loads(defaults.read_text()) if local and defaults.is_file() else {}
    return family.target_class.from_pretrained(path_or_id, device=device, dtype=dtype, name=model, **kwargs)


__all__ = ["DEFAULT_MODEL", "EMBEDDED_PATH", "FAMILIES", "MODELS", "RANDOM_MODELS", "TINY_MODELS", "Family", "Target", "Video",
           "family_of", "load_target"]
