"""Model families and the names that load them. Adding a family = one file + one line in `FAMILIES`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .base import Target, Video

EMBEDDED_PATH = Path(__file__).resolve().parent.parent / "models" / "embedded"

#: names a user may type, with what they load (hub ids load only where a hub is reachable)
MODELS = {
    "embedded": str(EMBEDDED_PATH),
    "svd": "stabilityai/stable-video-diffusion-img2vid",
    "svd-xt": "stabilityai/stable-video-diffusion-img2vid-xt",
    "cogvideox": "THUDM/CogVideoX-5b-I2V",
    "tiny-svd": None,
    "tiny-cogvideox": None,
}
DEFAULT_MODEL = "embedded"


def _family(path_or_id: str) -> str:
    """'svd' or 'cogvideox', from a local folder's model_index.json or from a hub id's name."""
    index = Path(path_or_id) / "model_index.json"
    if index.is_file():
        class_name = json.loads(index.read_text()).get("_class_name", "")
    else:
        class_name = path_or_id
    if "cogvideo" in class_name.lower():
        return "cogvideox"
    if "stablevideo" in class_name.lower() or "stable-video" in class_name.lower():
        return "svd"
    raise ValueError(f"model {path_or_id!r}: cannot tell its family (expected an SVD or CogVideoX pipeline)")


def load_target(model: str = DEFAULT_MODEL, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Target:
    """Load a target by name (see `MODELS`), hub id or local diffusers folder."""
    if model == "tiny-svd":
        from .svd import tiny_svd

        return tiny_svd(device=device, dtype=dtype)
    if model == "tiny-cogvideox":
        from .cogvideox import tiny_cogvideox

        return tiny_cogvideox(device=device, dtype=dtype)
    path_or_id = MODELS.get(model, model)
    if path_or_id == str(EMBEDDED_PATH) and not (EMBEDDED_PATH / "model_index.json").is_file():
        raise ValueError(f"the embedded model is missing from {EMBEDDED_PATH}")
    local = os.path.isdir(path_or_id)
    if not local and "/" not in path_or_id:
        raise ValueError(f"unknown model {model!r}: use one of {', '.join(MODELS)}, a hub id or a local folder")
    if _family(path_or_id) == "svd":
        from .svd import SVDTarget as cls
    else:
        from .cogvideox import CogVideoXTarget as cls
    # a local folder may carry guard_defaults.json: the target's defaults for that model (e.g. the
    # embedded model's size and denoising steps), keyword arguments of the target's constructor
    defaults = Path(path_or_id) / "guard_defaults.json"
    kwargs = json.loads(defaults.read_text()) if local and defaults.is_file() else {}
    return cls.from_pretrained(path_or_id, device=device, dtype=dtype, name=model, **kwargs)


__all__ = ["MODELS", "DEFAULT_MODEL", "Target", "Video", "load_target"]
