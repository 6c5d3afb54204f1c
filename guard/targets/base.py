"""What a protection method needs from an image-to-video model: the `Target` interface.

One subclass per model family (`svd.py`, `cogvideox.py`), registered in `guard.targets.FAMILIES`. A
method only talks to this interface, so a method written once runs on every family, and adding a family
means adding one file and one registry entry.

Range contract at this boundary: images are float tensors (B, 3, H, W) in [0, 1] at the target's
working resolution (`target.height`, `target.width`); conversions to [-1, 1] happen inside a target.
A photo of another size reaches that resolution through `guard.resize` (protection) or the pipeline's
own resize (`generate`).
Every method here is differentiable with respect to the image unless its docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
import torch

from ..resize import center_crop_box

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def normalize_to_neg_one_to_one(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def unnormalize_to_zero_to_one(x: torch.Tensor) -> torch.Tensor:
    return (x + 1.0) * 0.5


@dataclass
class Video:
    """A generated video.

    frames: uint8 array (F, H, W, 3).
    latents: the final denoised latents (B, F', C, h, w) in the denoiser's space (what `encode_video`
        returns for the same frames, up to the VAE's reconstruction error), or None.
    settings: what made it (model, seed, frames, steps, ...), so a result can be redone.
    """

    frames: np.ndarray
    latents: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)


def with_photo(image: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Mark a working-size image (B, 3, h, w) with the photo it was resized from (B, 3, H, W), both
    in [0, 1]: what an animator hands the pipeline before its own resize. A family whose pipeline
    reads the photo as given (SVD's CLIP branch resizes the photo itself to 224) reads it through
    `photo_of`; every other use of the image is the working-size tensor itself. Returns `image`."""
    image.guard_photo = photo
    return image


def photo_of(image: torch.Tensor) -> torch.Tensor:
    """The photo a working-size image was made from (`with_photo`), or the image itself when it was
    handed to the pipeline at the working size (a center-cropped photo, a transformed or clean
    reference without a mark)."""
    return getattr(image, "guard_photo", image)


class StopForward(Exception):
    """Raised by `AttentionStore.add` once every attention layer a loss reads has run in a denoiser call
    made with `maps_only=True`; `denoise` catches it (the rest of the forward is never computed)."""


def in_backward() -> bool:
    """True while autograd runs a backward pass (a checkpointed block recomputing its forward)."""
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1


class AttentionStore:
    """Collects attention maps produced while `enabled`; targets' attention processors call `add`.

    Every stored map has frames on its last two axes: (..., F, F), rows summing to one over the
    frames the model attends to (a temporal self-attention map).
    """

    def __init__(self):
        self.enabled = False
        self.maps: list[torch.Tensor] = []
        self.layers: int | None = None  # keep the first `layers` captured layers of each denoiser call
        self.stop_after: int | None = None  # raise StopForward once this many layers have run
        self.seen = 0  # captured layers run so far in the current denoiser call

    def add(self, probs: torch.Tensor) -> None:
        """Called by a recording processor each time a captured layer runs. Stores in forward only: a
        gradient-checkpointed block recomputes its forward during backward, which must not record twice."""
        if not self.enabled or in_backward():
            return
        self.seen += 1
        if self.layers is None or self.seen <= self.layers:
            self.maps.append(probs)
        if self.stop_after is not None and self.seen >= self.stop_after:
            raise StopForward


def declared_options(kind: str) -> frozenset[str]:
    """Every option of `kind` ("condition" or "generate") that some registered family declares."""
    from . import FAMILIES  # the registry imports this module

    return frozenset(name for family in FAMILIES.values()
                     for name in getattr(family.target_class, f"{kind}_options"))


class Target:
    """Base class of an I2V model family. Subclasses implement every method that raises here.

    Options: `condition` and `generate` take keyword options besides their common arguments, and each
    family declares the ones it has (`condition_options`, `generate_options`). An option that another
    registered family declares is ignored, so one call serves every family (SVD's `motion_bucket_id`
    passed to CogVideoX does nothing); a name no family declares raises ValueError (a typo)."""

    family: str = ""
    #: options of `condition` (keyword arguments of `_condition`); one left out takes the target's
    #: attribute of the same name (its default)
    condition_options: tuple[str, ...] = ()
    #: options of `generate` (keyword arguments of `_generate`), each a parameter of the pipeline's
    #: `__call__` that `generate` passes on under its own name
    generate_options: tuple[str, ...] = ()
    #: the diffusers pipeline `generate` runs, and its denoiser (UNet or transformer) `denoise` calls
    pipe: "DiffusionPipeline"
    denoiser: torch.nn.Module
    #: working resolution and default video length of the loaded model
    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    device: torch.device
    dtype: torch.dtype

    def __init__(self):
        self.attention_store = AttentionStore()

    # -- image side -------------------------------------------------------------------------------
    def prepare_image(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """Center-crop to the model's aspect ratio and resize to its working resolution (RGB, Lanczos):
        what a careful user does before handing a photo to the pipeline (the "crop" view of
        `guard.resize`, which crops the same window). `generate` does not call it: it hands the
        photo to the pipeline as it is, as an animator would."""
        image = image.convert("RGB")
        box = center_crop_box(image.width, image.height, self.width, self.height)
        if box != (0, 0, image.width, image.height):
            image = image.crop(box)
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), PIL.Image.Resampling.LANCZOS)
        return image

    def image_latents(self, image: torch.Tensor) -> torch.Tensor:
        """VAE latent of an image (B, 3, H, W) in [0, 1], as the pipeline conditions on it.

        This is the quantity the encoder (spatial) attacks move."""
        raise NotImplementedError

    def condition(self, image: torch.Tensor, generator: torch.Generator | None = None, **options) -> dict:
        """Everything the denoiser is conditioned on, computed from the image with gradients, as the
        pipeline conditions on it when `generate` is called with the same options and a generator
        seeded alike (a working-size image marked with `with_photo` stands for that photo).

        options: this family's `condition_options` (others' are ignored; see the class docstring).
        Returns a dict that `denoise` accepts; its "image_latents" entry is `image_latents(image)`."""
        return self._condition(image, generator, **self._own_options("condition", options))

    def _condition(self, image: torch.Tensor, generator: torch.Generator | None, **options) -> dict:
        raise NotImplementedError

    def _own_options(self, kind: str, options: dict) -> dict:
        """The options of `kind` ("condition" or "generate") this family declares, out of `options`."""
        own = getattr(self, f"{kind}_options")
        known = declared_options(kind) | set(own)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{kind} options must be among {', '.join(sorted(known)) or 'none'} (the model "
                             f"families' own), got {', '.join(map(repr, unknown))}")
        return {name: value for name, value in options.items() if name in own}

    # -- video side -------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Latents (B, F', C, h, w) of video frames (B, F, 3, H, W) in [0, 1], in the space the denoiser
        works in (scaled as the pipeline scales them)."""
        raise NotImplementedError

    def sample_noise_level(self, batch_size: int, generator: torch.Generator | None = None,
                           low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Noise levels drawn uniformly from the fraction [low, high] of the sampling schedule
        (0 = least noise, 1 = most noise: the level the pipeline starts from), in the family's own
        units (sigma for SVD, timestep index for CogVideoX). Shape (batch_size,).

        0 <= low <= high <= 1, else ValueError: outside it a family would extrapolate its schedule."""
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"noise level range: need 0 <= low <= high <= 1 (fractions of the schedule), "
                             f"got low={low}, high={high}")
        return self._sample_noise_level(batch_size, generator, low, high)

    def _sample_noise_level(self, batch_size: int, generator: torch.Generator | None, low: float,
                            high: float) -> torch.Tensor:
        raise NotImplementedError

    def noise_levels(self, num_inference_steps: int | None = None) -> torch.Tensor:
        """The noise level of each denoising step `generate` runs with `num_inference_steps` (None: the
        model's default), most noise first, in `sample_noise_level`'s units: step k of the pipeline
        denoises the latents at level `noise_levels(n)[k]`. Shape (num_inference_steps,)."""
        raise NotImplementedError

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Noisy latents at `level` (from `sample_noise_level`) as the scheduler makes them."""
        raise NotImplementedError

    def denoise(self, noisy_latents: torch.Tensor, level: torch.Tensor, cond: dict, maps_only: bool = False,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One conditional denoiser call (no classifier-free guidance). Returns the raw model output
        and the predicted clean latents (float32), both shaped like `noisy_latents`.

        maps_only (inside `capture_attention`): the forward stops as soon as every captured layer has
        run, and (None, None) is returned: for losses that read attention maps only."""
        raise NotImplementedError

    def _run_denoiser(self, forward, maps_only: bool):
        """forward() with the store's per-call layer count reset; None if it was stopped (maps_only)."""
        store = self.attention_store
        if maps_only and not store.enabled:
            raise ValueError("maps_only=True needs capture_attention(): without maps nothing is computed")
        store.seen = 0
        n = self.num_attention_layers
        store.stop_after = min(store.layers or n, n) if maps_only else None
        try:
            return forward()
        except StopForward:
            return None
        finally:
            store.stop_after = None

    @contextlib.contextmanager
    def capture_attention(self, layers: int | None = None):
        """Inside this block, every denoiser call appends its temporal attention maps (with
        gradients) to the yielded list, one tensor (..., F, F) per captured layer, in forward order.

        layers: keep only the first `layers` captured layers of each call (None: all of them); with
        `denoise(..., maps_only=True)` the forward then stops right after them. The store drops its
        reference to the list when the block ends, so the maps live only as long as the caller keeps them
        (a served app must not hold the last request's maps in GPU memory)."""
        if layers is not None and layers < 1:
            raise ValueError(f"layers must be >= 1 (or None for all), got {layers}")
        store = self.attention_store
        store.maps, store.layers, store.enabled = [], layers, True
        try:
            yield store.maps
        finally:
            store.maps, store.layers, store.enabled = [], None, False

    #: which attention layers `capture_attention` materialises, in words (for docs and the app)
    attention_layers: str = ""
    #: how many layers `capture_attention` records per denoiser call (in forward order)
    num_attention_layers: int = 0

    def check_num_frames(self, num_frames: int | None) -> None:
        """Raise ValueError (one sentence) if this model cannot make videos of `num_frames` frames
        as it was trained (None: its default)."""
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")

    # -- generation -------------------------------------------------------------------------------
    def generate(self, image: PIL.Image.Image, seed: int = 0, num_frames: int | None = None,
                 num_inference_steps: int | None = None, return_latents: bool = False,
                 callback=None, **options) -> Video:
        """Make a video from an 8-bit image of any size with the unchanged diffusers pipeline (no
        gradients), seeded with `torch.Generator(device).manual_seed(seed)`. The image goes to the
        pipeline as it is, which resizes it to the working size (`video_processor.preprocess`:
        Lanczos, whatever the aspect ratio), as an animator's pipeline would; center-crop first with
        `prepare_image` to keep its aspect. The frames are the pipeline's own output_type="np"
        frames, rounded to 8 bits.

        num_frames, num_inference_steps: None for the model's defaults. `callback(step, total)` is
        called after each denoising step. options: this family's `generate_options` (others' are
        ignored; see the class docstring)."""
        return self._generate(image, seed, num_frames, num_inference_steps, return_latents, callback,
                              **self._own_options("generate", options))

    def _generate(self, image: PIL.Image.Image, seed: int, num_frames: int | None,
                  num_inference_steps: int | None, return_latents: bool, callback, **options) -> Video:
        raise NotImplementedError

    # -- a fixed prompt (families with a text encoder) ---------------------------------------------
    def drop_text_encoder(self) -> None:
        """Free the pipeline's text encoder once the target's fixed prompts are encoded (`prompt_embeds`,
        `negative_prompt_embeds`): CogVideoX's T5-XXL is about 9.5 GB in bf16, Wan's umT5-XXL 11 GB."""
        self.pipe.text_encoder = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def prompt_inputs(self, prompt: str | None = None, negative_prompt: str | None = None) -> dict:
        """The pipeline's `prompt_embeds` / `negative_prompt_embeds` for `generate`'s prompt options (None:
        the target's own). Only the prompts encoded at load exist: another one raises ValueError."""
        for field, given, own in (("prompt", prompt, self.prompt), ("negative_prompt", negative_prompt,
                                                                   self.negative_prompt)):
            if given is not None and given != own:
                raise ValueError(f"{field}: {self.name} encoded its {field} {own!r} when it was loaded and has no "
                                 f"text encoder since; load it with {field}={given!r} to use {given!r}")
        return {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def step_callback(callback, steps: int):
        """A diffusers `callback_on_step_end` that reports `callback(step, steps)` after each step."""

        def on_step_end(pipe, i, t, tensors):
            if callback is not None:
                callback(i + 1, steps)
            return tensors

        return on_step_end

    def to_tensor(self, image: PIL.Image.Image) -> torch.Tensor:
        """8-bit RGB image -> float32 tensor (1, 3, H, W) in [0, 1] on the target's device."""
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)[None].to(self.device)
