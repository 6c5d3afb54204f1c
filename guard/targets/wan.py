"""Wan image-to-video: Wan 2.1 I2V 14B (CLIP + VAE), Wan 2.2 I2V A14B (two experts, VAE only) and
Wan 2.2 TI2V-5B (first latent frame replaced by the image), all `WanImageToVideoPipeline` in diffusers 0.42.

The pipeline runs under `torch.no_grad()`, so an attack calls the components itself. Everything below
mirrors `diffusers/pipelines/wan/pipeline_wan_i2v.py` (0.42.1) step by step (step numbers in comments are
the pipeline's), written so gradients flow from every exposed quantity back to the image.

How the image enters (`prepare_latents`, `encode_image`):
- Wan 2.1 / 2.2 A14B: the VAE latent of the video [image, zeros x (F - 1)], normalised with the VAE's
  `latents_mean` / `latents_std`, after a 4-channel first-frame mask (ones on latent frame 0, which
  holds 4 video frames' worth of mask, zeros after); the transformer gets [noisy (C) | mask (4) |
  image video (C)] on channels (16 + 4 + 16 = 36).
- Wan 2.1 only: CLIP ViT tokens of the photo as given (`hidden_states[-2]`), through the transformer's
  added image cross-attention. The pipeline preprocesses them with `CLIPImageProcessor` (PIL bicubic
  resize, 8-bit, center crop); `image_embeddings` does the same in torch (see its docstring for what
  differs).
- Wan 2.2 TI2V-5B (`expand_timesteps`): the first latent frame of the noisy latents is replaced by the
  image's latent and its tokens get timestep 0; the other tokens the step's timestep.
- Wan 2.2 A14B (`boundary_ratio`): `transformer` denoises timesteps >= boundary_ratio * 1000 (high noise),
  `transformer_2` the others, exactly as the pipeline picks them (`expert`).

The VAE is causal in time: latent frame k depends on video frames up to 4k only. So the image's latent
(latent frame 0) is the VAE latent of the image alone, and the conditioning video of a shorter clip is
a prefix of a longer one's: `denoise` serves any frame count up to the conditioned one from one cond.

Noise levels are flow-matching sigmas in [0, 1] (x_t = (1 - sigma) x0 + sigma noise), as the checkpoints'
`UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")` steps them; the
transformer is given the scheduler's integer timestep int(sigma * 1000).

Temporal mixing is full 3D self-attention with 3D RoPE (`blocks[*].attn1`): `WanFrameAttentionRecorder`
computes a frame-to-frame map from sampled queries (`cogvideox.frame_attention`), never the full map.
"""

from __future__ import annotations


import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    WanRotaryPosEmbed,
    _get_added_kv_projections,
    _get_qkv_projections,
)

from .base import AttentionStore, Target, Video, normalize_to_neg_one_to_one, photo_of
from .cogvideox import QUERIES_PER_FRAME, _tiny_tokenizer, frame_attention


#: what the target conditions on when the caller gives no prompt (the attack does not know the animator's)
DEFAULT_PROMPT = "The scene in the photo comes to life with natural, smooth motion."

#: the text length the transformer's image cross-attention assumes (WanAttnProcessor splits its context
#: at `len - 512`) and the pipeline's default max_sequence_length
TEXT_LENGTH = 512

#: working size and frame count per kind of checkpoint (the model cards': 480P for 2.1 / A14B at 16 fps,
#: 704 x 1280 at 121 frames, 24 fps for TI2V-5B)
DEFAULT_SIZE = {"i2v": (480, 832, 81), "ti2v": (704, 1280, 121)}


class FrameRope(tuple):
    """(cos, sin) of Wan's 3D RoPE, knowing the number of token frames of the video it was made for."""

    frames: int


class FrameCountingRope(WanRotaryPosEmbed):
    """Wan's rotary embedding (the same buffers and values), returned as a `FrameRope`: the attention
    processor then knows the frame count of the very call it serves, also when a checkpointed block
    recomputes it in backward."""

    def forward(self, hidden_states: torch.Tensor) -> FrameRope:
        rope = FrameRope(super().forward(hidden_states))
        rope.frames = hidden_states.shape[2] // self.patch_size[0]
        return rope


class WanFrameAttentionRecorder(WanAttnProcessor):
    """Processor for Wan's 3D self-attention (`blocks[*].attn1`).

    Its output is computed exactly as diffusers' `WanAttnProcessor` (0.42.1) computes it: the same
    projections, norms, RoPE and SDPA (the code below is that processor's, with the RoPE'd queries and
    keys kept aside). Whenever gradients are on or the store records, it also computes `frame_attention`
    on them ((B, heads, F', F'), with gradients) and adds it to the store; that it depends only on grad
    mode and the store means a checkpointed block recomputes in backward the operations of its forward
    (the store records in forward only). Outside both (generation) it is the stock processor."""

    def __init__(self, store: AttentionStore, queries_per_frame: int = QUERIES_PER_FRAME):
        super().__init__()
        self.store = store
        self.queries_per_frame = queries_per_frame

    def __call__(self, attn: WanAttention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 rotary_emb: FrameRope | None = None) -> torch.Tensor:
        # Copied from diffusers.models.transformers.transformer_wan.WanAttnProcessor.__call__ (0.42.1), with
        # SDPA for dispatch_attention_fn's default backend
        encoder_hidden_states_img = None
        if attn.add_k_proj is not None:
            # 512 is the context length of the text encoder, hardcoded for now
            image_context_length = encoder_hidden_states.shape[1] - 512
            encoder_hidden_states_img = encoder_hidden_states[:, :image_context_length]
            encoder_hidden_states = encoder_hidden_states[:, image_context_length:]

        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))  # (B, N, heads, d)
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))

        if rotary_emb is not None:
            def apply_rotary_emb(hidden_states, freqs_cos, freqs_sin):
                x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
                cos = freqs_cos[..., 0::2]
                sin = freqs_sin[..., 1::2]
                out = torch.empty_like(hidden_states)
                out[..., 0::2] = x1 * cos - x2 * sin
                out[..., 1::2] = x1 * sin + x2 * cos
                return out.type_as(hidden_states)

            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *rotary_emb)

        frames = getattr(rotary_emb, "frames", None)
        if frames is not None and encoder_hidden_states is None and (self.store.enabled or torch.is_grad_enabled()):
            probs = frame_attention(query.transpose(1, 2), key.transpose(1, 2), frames, self.queries_per_frame)
            self.store.add(probs)  # (B, heads, F', F'); may raise StopForward (denoise with maps_only)

        hidden_states_img = None
        if encoder_hidden_states_img is not None:
            key_img, value_img = _get_added_kv_projections(attn, encoder_hidden_states_img)
            key_img = attn.norm_added_k(key_img)
            key_img = key_img.unflatten(2, (attn.heads, -1))
            value_img = value_img.unflatten(2, (attn.heads, -1))
            hidden_states_img = _sdpa(query, key_img, value_img, None)
            hidden_states_img = hidden_states_img.flatten(2, 3).type_as(query)

        hidden_states = _sdpa(query, key, value, attention_mask)
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        if hidden_states_img is not None:
            hidden_states = hidden_states + hidden_states_img
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


def _sdpa(query, key, value, mask):
    """diffusers' native attention backend: SDPA on (B, N, heads, d) laid out as (B, heads, N, d)."""
    out = torch.nn.functional.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask, dropout_p=0.0,
        is_causal=False)
    return out.transpose(1, 2)


class WanTarget(Target):
    family = "wan"
    # no motion conditioning: the image, the prompt and the noise level are all the transformer sees
    condition_options = ()
    generate_options = ("prompt", "negative_prompt", "guidance_scale", "guidance_scale_2")

    def __init__(self, pipe: WanImageToVideoPipeline, name: str = "wan", prompt: str = DEFAULT_PROMPT,
                 num_inference_steps: int = 50, queries_per_frame: int = QUERIES_PER_FRAME,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 checkpointing: bool | None = None, negative_prompt: str = ""):
        """pipe: a loaded `WanImageToVideoPipeline` with its text encoder, whose scheduler uses flow sigmas
        (the checkpoints' UniPC); prompt: what `condition` and `generate` condition on, negative_prompt: what
        classifier-free guidance steers away from ("" is the pipeline's default), both encoded here once,
        after which the text encoder is dropped (`pipe.text_encoder` is None: umT5-XXL holds about 11 GB in
        bf16 and guard never encodes another prompt); height, width, num_frames: working size and length
        (default: 480 x 832 x 81, TI2V-5B 704 x 1280 x 121)."""
        super().__init__()
        if queries_per_frame < 1:
            raise ValueError(f"queries_per_frame must be >= 1, got {queries_per_frame}")
        config = pipe.scheduler.config
        if not (config.get("use_flow_sigmas") and config.get("prediction_type") == "flow_prediction"
                and not config.get("use_dynamic_shifting")):
            raise ValueError(f"{name}: guard's Wan target needs a flow-sigma scheduler (UniPCMultistepScheduler "
                             "with use_flow_sigmas=True, prediction_type='flow_prediction'), got "
                             f"{type(pipe.scheduler).__name__}")
        self.pipe, self.name = pipe, name
        self.vae, self.image_encoder = pipe.vae, pipe.image_encoder
        #: the experts, high noise first: (transformer,) or (transformer, transformer_2)
        self.denoisers = tuple(m for m in (pipe.transformer, pipe.transformer_2) if m is not None)
        self.denoiser = self.denoisers[0]
        for module in (*self.denoisers, self.vae, self.image_encoder):
            if module is not None:
                module.requires_grad_(False).eval()
        self.scheduler = pipe.scheduler
        self.device, self.dtype = self.denoiser.device, self.denoiser.dtype
        self.expand_timesteps = bool(pipe.config.expand_timesteps)
        ratio = pipe.config.boundary_ratio
        # 6. the pipeline's boundary: `transformer` at t >= it, `transformer_2` below
        self.boundary_timestep = None if ratio is None else ratio * config.num_train_timesteps
        default = DEFAULT_SIZE["ti2v" if self.expand_timesteps else "i2v"]
        self.height, self.width = height or default[0], width or default[1]
        self.num_frames = num_frames or default[2]
        self.check_num_frames(self.num_frames)
        self.num_inference_steps = num_inference_steps
        self.num_attention_layers = len(self.denoiser.blocks)
        assert all(len(m.blocks) == self.num_attention_layers for m in self.denoisers), "experts of unequal depth"
        self.attention_layers = (
            f"the 3D self-attention of all {self.num_attention_layers} transformer blocks (blocks[*].attn1, "
            f"of the expert that denoises the level): for {queries_per_frame} evenly spaced queries per latent "
            "frame, the softmax mass on each latent frame's keys, averaged over the queries; maps (B, heads, F', F')"
        )
        recorder = WanFrameAttentionRecorder(self.attention_store, queries_per_frame)
        for transformer in self.denoisers:
            transformer.rope.__class__ = FrameCountingRope  # same module and buffers, frames attached
            for block in transformer.blocks:
                block.attn1.set_processor(recorder)
        self._encode_prompts(prompt, negative_prompt)
        # Block-level activation checkpointing for attack steps (default: on for CUDA, off on CPU)
        if checkpointing is None:
            checkpointing = self.device.type == "cuda"
        if checkpointing:
            for transformer in self.denoisers:
                transformer.enable_gradient_checkpointing()
        self.checkpointing = checkpointing

    @classmethod
    def from_pretrained(cls, path_or_id: str, device="cpu", dtype=torch.float32, **kwargs) -> "WanTarget":
        """Hub id (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, ...) or local diffusers folder. The VAE and the
        image encoder stay in float32 (as the model cards load them); kwargs go to the constructor."""
        from transformers import CLIPVisionModel

        parts = {"vae": AutoencoderKLWan.from_pretrained(path_or_id, subfolder="vae", dtype=torch.float32)}
        index = WanImageToVideoPipeline.load_config(path_or_id)
        if (index.get("image_encoder") or [None])[0] is not None:
            parts["image_encoder"] = CLIPVisionModel.from_pretrained(path_or_id, subfolder="image_encoder",
                                                                     dtype=torch.float32)
        pipe = WanImageToVideoPipeline.from_pretrained(path_or_id, dtype=dtype, **parts)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), **kwargs)

    @torch.no_grad()
    def _encode_prompts(self, prompt: str, negative_prompt: str) -> None:
        """Encode both prompts once with the pipeline's `encode_prompt` (UMT5, 512 tokens, cast to the
        transformer's dtype as the pipeline casts them), then drop the text encoder."""
        if self.pipe.text_encoder is None:
            raise ValueError(f"{self.name}: the pipeline has no text encoder to encode the prompt {prompt!r}")
        self.prompt, self.negative_prompt = prompt, negative_prompt
        embeds, negative = self.pipe.encode_prompt(prompt, negative_prompt, do_classifier_free_guidance=True,
                                                   num_videos_per_prompt=1, max_sequence_length=TEXT_LENGTH,
                                                   device=self.device)
        self.prompt_embeds, self.negative_prompt_embeds = embeds.to(self.dtype), negative.to(self.dtype)  # (1, 512, D)
        self.drop_text_encoder()

    # -- shapes -----------------------------------------------------------------------------------
    def check_num_frames(self, num_frames: int | None) -> None:
        """A frame count must be 1 + a multiple of the VAE's temporal factor (4), as the pipeline rounds
        any other count (81 = 1 + 4 x 20 -> 21 latent frames); RoPE positions exist for any such count."""
        if num_frames is None:
            return
        temporal = self.pipe.vae_scale_factor_temporal
        if num_frames < 1 or (num_frames - 1) % temporal != 0:
            raise ValueError(f"num_frames must be 1 + a multiple of {temporal} (e.g. 81), got {num_frames}")

    def latent_frames(self, num_frames: int) -> int:
        self.check_num_frames(num_frames)
        return (num_frames - 1) // self.pipe.vae_scale_factor_temporal + 1

    def _normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """(posterior mode - latents_mean) / latents_std on channel axis 1, as `prepare_latents`."""
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, device=latents.device).view(1, config.z_dim, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(config.latents_std, device=latents.device).view(1, config.z_dim, 1, 1, 1)
        return (latents.float() - mean.to(latents.dtype)) * inv_std.to(latents.dtype)

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised VAE latents (B, C, F', h, w) of a video (B, 3, F, H, W) in [-1, 1] (posterior mode)."""
        return self._normalise(self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode().float())

    # -- image side -------------------------------------------------------------------------------
    def image_latents(self, image: torch.Tensor) -> torch.Tensor:
        """The image's latent (B, C, h, w), normalised as the pipeline normalises it: latent frame 0 of the
        conditioning video (the VAE is causal, so it is the latent of the image alone)."""
        x = normalize_to_neg_one_to_one(image.float()).unsqueeze(2)  # (B, 3, 1, H, W)
        return self._encode(x)[:, :, 0]

    def image_embeddings(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP tokens (B, T, D) of `photo_of(image)` (the photo as the pipeline is handed it, any size, in
        [0, 1]): `encode_image`'s `hidden_states[-2]`, with gradients.

        The pipeline's `CLIPImageProcessor` resizes the 8-bit photo's shortest edge to its size with PIL
        (bicubic, 8-bit output), center-crops and normalises. Here the forward value is exactly that (the
        photo rounded to 8 bits, as it is saved, resized by PIL with the processor's filter), and the gradient
        flows through torch's antialiased bicubic resize of the float photo (the same filter in floating
        point; PIL's fixed-point result differs from it by up to 2 of 255 levels): a straight-through
        estimator for the 8-bit rounding and PIL's arithmetic."""
        processor = self.pipe.image_processor
        x = photo_of(image).float().clamp(0, 1)
        h, w = x.shape[-2:]
        short = processor.size["shortest_edge"]
        # transformers' get_resize_output_image_size: the long edge int(short * long / short_side)
        size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        smooth = x
        if size != (h, w):
            smooth = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True,
                                                     align_corners=False)
        exact = torch.stack([self._pil_resize(photo, size, processor.resample) for photo in x.detach()])
        x = smooth + (exact.to(x.device) - smooth).detach()  # PIL's values forward, torch's gradient
        crop_h, crop_w = processor.crop_size["height"], processor.crop_size["width"]
        top, left = (size[0] - crop_h) // 2, (size[1] - crop_w) // 2
        x = x[..., top:top + crop_h, left:left + crop_w]
        mean = torch.tensor(processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.image_encoder.dtype)
        return self.image_encoder(pixel_values=x, output_hidden_states=True).hidden_states[-2]

    @staticmethod
    def _pil_resize(photo: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
        """One photo (3, H, W) in [0, 1] as 8 bits, resized to `size` (h, w) by PIL: (3, h, w) in [0, 1]."""
        array = (photo.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        resized = PIL.Image.fromarray(array)
        if resized.size != (size[1], size[0]):
            resized = resized.resize((size[1], size[0]), PIL.Image.Resampling(resample))
        return torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255

    def _conditioning_video(self, image: torch.Tensor, num_frames: int) -> torch.Tensor:
        """5. `prepare_latents`' conditioning, (B, 4 + C, F', h, w): [first-frame mask | latents of
        [image, zeros...]]; with expand_timesteps the image's latent alone, (B, C, 1, h, w)."""
        x = normalize_to_neg_one_to_one(image.float()).unsqueeze(2)  # (B, 3, 1, H, W)
        if self.expand_timesteps:
            return self._encode(x)
        b, _, _, height, width = x.shape
        video = torch.cat([x, x.new_zeros(b, 3, num_frames - 1, height, width)], dim=2)
        latents = self._encode(video)  # (B, C, F', h, w)
        return torch.cat([self._first_frame_mask(latents), latents], dim=1)

    def _first_frame_mask(self, latents: torch.Tensor) -> torch.Tensor:
        """The pipeline's mask (B, 4, F', h, w): video frame 0 is known, the others are not; latent frame
        0 stands for 4 video frames (the first one repeated), so its 4 channels are ones, every later latent
        frame's zeros."""
        b, _, f, h, w = latents.shape
        temporal = self.pipe.vae_scale_factor_temporal
        mask = latents.new_zeros(b, temporal, f, h, w)
        mask[:, :, 0] = 1
        return mask

    def _condition(self, image: torch.Tensor, generator: torch.Generator | None) -> dict:
        """Everything `denoise` needs, for videos of up to `self.num_frames` frames.

        "condition": what the pipeline's `prepare_latents` returns second (pipeline layout, channels on
        axis 1): [mask | image video latents] (B, 4 + C, F', h, w), or the image latent (B, C, 1, h, w) with
        expand_timesteps; "image_latents" (B, C, h, w): its latent frame 0; "prompt_embeds" (1, 512, D) from
        `self.prompt` (no gradient); "image_embeds" (B, T, D), Wan 2.1 only (a transformer with `image_dim`).
        `generator` is unused: the pipeline encodes the posterior mode and adds no noise to the image."""
        condition = self._conditioning_video(image, self.num_frames)
        cond = {
            "condition": condition,
            "image_latents": condition[:, -self.vae.config.z_dim:, 0],
            "prompt_embeds": self.prompt_embeds,
        }
        if self.pipe.transformer is not None and self.pipe.transformer.config.image_dim is not None:
            cond["image_embeds"] = self.image_embeddings(image).to(self.dtype)
        return cond

    # -- video side -------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Latents (B, F', C, h, w) of frames (B, F, 3, H, W) in [0, 1] (posterior mode, normalised with
        latents_mean / latents_std): the space the pipeline denoises in."""
        x = normalize_to_neg_one_to_one(frames.float()).transpose(1, 2)  # (B, 3, F, H, W)
        return self._encode(x).transpose(1, 2)

    def _sigma(self, fraction: torch.Tensor) -> torch.Tensor:
        """The scheduler's flow sigma at a fraction of its schedule (`set_timesteps` with use_flow_sigmas:
        linspace(1, 1/T, n + 1)[:-1], shifted by flow_shift, 1 moved to 1 - 1e-6)."""
        config = self.scheduler.config
        t = 1.0 / config.num_train_timesteps
        s = t + fraction.double() * (1.0 - t)
        shift = config.flow_shift
        s = shift * s / (1 + (shift - 1) * s)
        return torch.where((s - 1).abs() < 1e-6, s - 1e-6, s).float()

    def _sample_noise_level(self, batch_size: int, generator: torch.Generator | None, low: float,
                            high: float) -> torch.Tensor:
        """Flow sigmas (batch_size,) at uniform fractions of the schedule in [low, high]."""
        device = generator.device if generator is not None else "cpu"
        u = low + (high - low) * torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
        return self._sigma(u).to(self.device)

    def noise_levels(self, num_inference_steps: int | None = None) -> torch.Tensor:
        """The sigmas of the pipeline's steps (most noise first; the final 0 is where it ends, not a step)."""
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps, device=self.device)
        return scheduler.sigmas[:-1].to(self.device)

    def timestep(self, level: torch.Tensor) -> torch.Tensor:
        """The integer timestep the transformer is given at a sigma: the scheduler's int(sigma * 1000)."""
        return (level.double() * self.scheduler.config.num_train_timesteps).long()

    def expert(self, level: torch.Tensor) -> torch.nn.Module:
        """The transformer the pipeline runs at this noise level (one level, or a batch on one side of the
        boundary): `transformer` at timestep >= boundary_ratio * 1000, else `transformer_2`."""
        if self.boundary_timestep is None:
            return self.pipe.transformer
        high = self.timestep(level.reshape(-1)) >= self.boundary_timestep
        if not (high.all() or not high.any()):
            raise ValueError(f"noise levels {level.tolist()} straddle the experts' boundary (timestep "
                             f"{self.boundary_timestep}): denoise each side separately")
        return self.pipe.transformer if bool(high[0]) else self.pipe.transformer_2

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """(1 - sigma) x + sigma noise (the scheduler's `add_noise` with flow sigmas)."""
        sigma = level.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
        return (1 - sigma) * latents + sigma * noise

    def denoise(self, noisy_latents: torch.Tensor, level: torch.Tensor, cond: dict, maps_only: bool = False,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One conditional call (no CFG) of the expert for `level` on noisy latents (B, F', C, h, w) at sigmas
        `level` (B,). Returns (flow prediction, predicted x0 = x_t - sigma * prediction), float32, shaped like
        the input; (None, None) with maps_only. F' may be at most the conditioned frame count (the
        conditioning of a shorter video is a prefix, see the module docstring). With expand_timesteps, x0's
        frame 0 is the scheduler's (the pipeline replaces that frame by the image latent at the end)."""
        b, f, _, h, w = noisy_latents.shape
        self.check_num_frames((f - 1) * self.pipe.vae_scale_factor_temporal + 1)
        condition = cond["condition"]
        if not self.expand_timesteps:
            if condition.shape[2] < f:
                raise ValueError(f"cond was made for {condition.shape[2]} latent frames, got {f}")
            condition = condition[:, :, :f]
        transformer = self.expert(level)
        t = self.timestep(level.to(self.device)).expand(b)
        latents = noisy_latents.float().transpose(1, 2)  # (B, C, F', h, w), as the pipeline's
        if self.expand_timesteps:
            # the pipeline's first_frame_mask: 0 on latent frame 0 (the image), 1 elsewhere
            mask = torch.ones(1, 1, f, h, w, device=latents.device)
            mask[:, :, 0] = 0
            model_input = (1 - mask) * condition.float() + mask * latents
            _, p_h, p_w = transformer.config.patch_size
            timestep = mask[0][0][:, ::p_h, ::p_w].flatten()[None] * t[:, None]  # (B, tokens)
        else:
            model_input = torch.cat([latents, condition.float().expand(b, -1, -1, -1, -1)], dim=1)
            timestep = t
        image_embeds = cond.get("image_embeds")
        if image_embeds is not None and image_embeds.shape[0] != b:
            image_embeds = image_embeds.expand(b, -1, -1)
        out = self._run_denoiser(lambda: transformer(
            hidden_states=model_input.to(transformer.dtype),
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"].to(transformer.dtype).expand(b, -1, -1),
            encoder_hidden_states_image=image_embeds,
            attention_kwargs=None,
            return_dict=False,
        )[0], maps_only)
        if out is None:
            return None, None
        out = out.float().transpose(1, 2)  # (B, F', C, h, w)
        sigma = level.float().view(-1, 1, 1, 1, 1).to(out.device)
        return out, noisy_latents.float() - sigma * out

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, image: PIL.Image.Image, seed: int, num_frames: int | None, num_inference_steps: int | None,
                  return_latents: bool, callback, prompt: str | None = None, negative_prompt: str | None = None,
                  guidance_scale: float | None = None, guidance_scale_2: float | None = None) -> Video:
        """prompt, negative_prompt: None or the target's own (`prompt_inputs`: the pipeline gets their
        embeddings); the other options None: the pipeline's defaults (guidance 5; the low-noise expert's
        guidance_scale_2 = guidance_scale). Latents in guard's layout (B, F', C, h, w)."""
        num_frames = num_frames or self.num_frames
        self.check_num_frames(num_frames)
        steps = num_inference_steps or self.num_inference_steps
        embeddings = self.prompt_inputs(prompt, negative_prompt)
        options = {name: value for name, value in (("guidance_scale", guidance_scale),
                                                   ("guidance_scale_2", guidance_scale_2)) if value is not None}
        image = image.convert("RGB")  # any size: the pipeline resizes it (Target.generate)

        generator = torch.Generator(self.device).manual_seed(seed)
        latents = self.pipe(image, height=self.height, width=self.width, num_frames=num_frames,
                            num_inference_steps=steps, generator=generator, output_type="latent",
                            callback_on_step_end=self.step_callback(callback, steps),
                            max_sequence_length=TEXT_LENGTH, **embeddings, **options).frames  # (1, C, F', h, w)
        # decode exactly as the pipeline does for output_type="np"
        z = latents.to(self.vae.dtype)
        config = self.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        video = self.vae.decode(z / inv_std + mean, return_dict=False)[0]  # (1, 3, F, H, W) in [-1, 1]
        frames = self.pipe.video_processor.postprocess_video(video, output_type="np")[0]  # (F, H, W, 3)
        frames = (frames * 255).round().astype(np.uint8)
        settings = dict(model=self.name, seed=seed, num_frames=num_frames, num_inference_steps=steps,
                        height=self.height, width=self.width, prompt=self.prompt,
                        negative_prompt=self.negative_prompt, **options)
        return Video(frames=frames, latents=latents.transpose(1, 2) if return_latents else None, settings=settings)


# -- tiny random-weight builders (CPU tests) -----------------------------------------------------------
def tiny_wan(device="cpu", dtype=torch.float32, seed: int = 0) -> WanTarget:
    """A random-weight Wan 2.1 I2V (CLIP image tokens + [noisy | mask | image] channels) small enough for
    CPU tests, built offline: configs as in diffusers' fast test (tests/pipelines/wan/
    test_wan_image_to_video.py), with a UMT5 encoder from a config, a tokenizer built in memory, a CLIP
    vision model from a config, and the checkpoints' flow-sigma UniPC scheduler (flow_shift 3, 480P's).
    32 x 32, 9 frames (3 latent frames of 2 x 2 tokens), 3 steps."""
    return _tiny_target(_tiny_pipeline(seed, clip=True), device, dtype, name="tiny-wan")


def tiny_wan_moe(device="cpu", dtype=torch.float32, seed: int = 0) -> WanTarget:
    """`tiny_wan` as Wan 2.2 I2V A14B: no CLIP, two experts split at boundary_ratio 0.875 (diffusers' fast
    test's): with 3 steps at flow_shift 3 the first step (t = 999) runs `transformer`, the others (t = 857,
    600) `transformer_2`."""
    return _tiny_target(_tiny_pipeline(seed, experts=2, boundary_ratio=0.875), device, dtype, name="tiny-wan-moe")


def tiny_wan_ti2v(device="cpu", dtype=torch.float32, seed: int = 0) -> WanTarget:
    """`tiny_wan` as Wan 2.2 TI2V-5B: expand_timesteps (first latent frame replaced by the image, timestep 0
    on its tokens), a 48-channel residual VAE with patch size 2 (16x spatial), no CLIP, one transformer; 64 x 64."""
    return _tiny_target(_tiny_pipeline(seed, expand_timesteps=True), device, dtype, name="tiny-wan-ti2v", size=64)


def _tiny_pipeline(seed: int, clip: bool = False, experts: int = 1, boundary_ratio: float | None = None,
                   expand_timesteps: bool = False) -> WanImageToVideoPipeline:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    if expand_timesteps:
        vae = AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                               latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1],
                               num_res_blocks=1, scale_factor_spatial=16, scale_factor_temporal=4,
                               temperal_downsample=[False, True, True])
    else:
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
    # the checkpoints' scheduler_config.json (Wan2.1-I2V-14B-480P: flow_shift 3)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    words = sorted({w.strip(".,").lower() for w in DEFAULT_PROMPT.split()} | {"a", "the", "camera", "moves"})
    tokenizer = _tiny_tokenizer(words)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1,
    ))
    z = vae.config.z_dim
    in_channels = z if expand_timesteps else z + 4 + z
    transformers = []
    for _ in range(experts):
        torch.manual_seed(seed + len(transformers))
        transformers.append(WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
            out_channels=z, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=4 if clip else None,
        ))
    image_encoder = image_processor = None
    if clip:
        torch.manual_seed(seed)
        image_encoder = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            intermediate_size=16, patch_size=4,
        ))
        image_processor = CLIPImageProcessor(crop_size=32, size=32)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, image_processor=image_processor,
        image_encoder=image_encoder, transformer=transformers[0],
        transformer_2=transformers[1] if experts > 1 else None, boundary_ratio=boundary_ratio,
        expand_timesteps=expand_timesteps,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_target(pipe: WanImageToVideoPipeline, device, dtype, size: int = 32, **kwargs) -> WanTarget:
    """Square `size` (2 x 2 tokens a latent frame: 32 at 8x, 64 at the TI2V VAE's 16x), 9 frames, 3 steps."""
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    return WanTarget(pipe, num_inference_steps=3, height=size, width=size, num_frames=9, **kwargs)


# -- full-size random-weight builders (GPU benchmarks) -------------------------------------------------
# Transformer configs: diffusers' conversion script (scripts/convert_wan_to_diffusers.py,
# `get_transformer_config`: "Wan-I2V-14B-480p", "Wan2.2-I2V-14B-720p", "Wan2.2-TI2V-5B"), which wrote the
# hub's Wan-AI/*-Diffusers folders.
WAN_14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6)
#: Wan 2.1 I2V: CLIP ViT-H/14 tokens (1280 wide) through the added image cross-attention (5120 = 40 x 128)
WAN21_I2V_14B = dict(WAN_14B, image_dim=1280, added_kv_proj_dim=5120)
WAN22_TI2V_5B = dict(WAN_14B, num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30)
#: the Wan 2.2 VAE (TI2V-5B): the conversion script's `vae22_diffusers_config`, 48 latent channels, 16x spatial
#: (patch 2 on 8x), 4x temporal
WAN22_VAE = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_temporal=4, scale_factor_spatial=16,
    latents_mean=[-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
                  0.157, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
                  -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.123, -0.0313, -0.1649, 0.0117, 0.0723,
                  -0.2839, -0.2083, -0.052, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667],
    latents_std=[0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.499, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901, 0.6885,
                 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659, 0.7069, 0.5338,
                 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458,
                 1.6887, 0.3971, 1.06, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744],
)


def random_wan21_i2v_14b(device="cpu", dtype=torch.float32) -> WanTarget:
    """Full-size Wan 2.1 I2V 14B 480P with random weights, built without a hub (GPU benchmarks: time and
    memory depend on shapes, not weights): 81 frames at 480 x 832, 50 steps. Transformer `WAN21_I2V_14B`
    (40 layers, 40 heads x 128, 16.4B parameters with the image cross-attention), the Wan 2.1 VAE
    (`AutoencoderKLWan`'s defaults, which the conversion script loads the checkpoint into), the CLIP
    ViT-H/14 image encoder (laion/CLIP-ViT-H-14-laion2B-s32B-b79K: 32 layers, 1280 wide, patch 14, 224),
    flow_shift 3 (the script's for I2V 480P)."""
    return _random_target("random-wan2.1-i2v-14b", device, dtype, WAN21_I2V_14B, clip=True, flow_shift=3.0)


def random_wan22_i2v_a14b(device="cpu", dtype=torch.float32) -> WanTarget:
    """Full-size Wan 2.2 I2V A14B with random weights: two 14B experts (`WAN_14B`: no image
    cross-attention, no image encoder) split at boundary_ratio 0.9, flow_shift 3 (both the conversion
    script's for Wan2.2 I2V), the Wan 2.1 VAE; 81 frames at 480 x 832 (`WanTarget`'s default), 50 steps."""
    return _random_target("random-wan2.2-i2v-a14b", device, dtype, WAN_14B, experts=2, boundary_ratio=0.9,
                          flow_shift=3.0)


def random_wan22_ti2v_5b(device="cpu", dtype=torch.float32) -> WanTarget:
    """Full-size Wan 2.2 TI2V-5B with random weights: transformer `WAN22_TI2V_5B` (30 layers, 24 heads x 128,
    48 channels in and out), the Wan 2.2 VAE `WAN22_VAE`, expand_timesteps, flow_shift 5 (the conversion
    script's for TI2V); 121 frames at 704 x 1280, 50 steps."""
    return _random_target("random-wan2.2-ti2v-5b", device, dtype, WAN22_TI2V_5B, vae=WAN22_VAE, expand_timesteps=True,
                          flow_shift=5.0)


def _as_loaded(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` cast to `dtype` as `from_pretrained(..., dtype=dtype)` casts a checkpoint: floating tensors
    under a module named in the class's `_keep_in_fp32_modules` (Wan: rope, time_embedder,
    scale_shift_table, norm1-3) stay float32, the others become `dtype`, one tensor at a time."""
    keep = model._keep_in_fp32_modules or []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32 if any(k in name.split(".") for k in keep) else dtype)
    return model


def _random_target(name: str, device, dtype, transformer: dict, experts: int = 1, clip: bool = False,
                   vae: dict | None = None, flow_shift: float = 3.0, boundary_ratio: float | None = None,
                   expand_timesteps: bool = False) -> WanTarget:
    """Each module built on `device` in float32; the transformers (one at a time, so that one float32 copy
    exists at most) cast to `dtype`; the VAE and the image encoder stay in float32, as `from_pretrained`
    loads them. The umT5-XXL text encoder runs once, at load (then it is dropped): a 1-layer stand-in with
    the real 4096-wide output keeps the transformer's inputs real-shaped."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = _tiny_tokenizer(sorted({w.strip(".,").lower() for w in DEFAULT_PROMPT.split()}))
    with torch.device(device):
        denoisers = [_as_loaded(WanTransformer3DModel(**transformer), dtype) for _ in range(experts)]
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=4096, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
            relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        )).to(dtype)
        image_encoder = image_processor = None
        if clip:
            image_encoder = CLIPVisionModel(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32, patch_size=14,
                image_size=224, projection_dim=1024, hidden_act="gelu"))
            image_processor = CLIPImageProcessor()  # 224 shortest edge, bicubic, 224 center crop, CLIP mean / std
        autoencoder = AutoencoderKLWan(**(vae or {}))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=flow_shift)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=autoencoder, scheduler=scheduler,
        image_processor=image_processor, image_encoder=image_encoder, transformer=denoisers[0],
        transformer_2=denoisers[1] if experts > 1 else None, boundary_ratio=boundary_ratio,
        expand_timesteps=expand_timesteps,
    )
    pipe.set_progress_bar_config(disable=True)
    return WanTarget(pipe.to(device), name=name)
