"""LTX-Video image-to-video (Lightricks/LTX-Video, 0.9.x 2B): `LTXImageToVideoPipeline` in diffusers 0.42.

The pipeline runs under `torch.no_grad()`, so an attack calls the components itself. Everything below
mirrors `diffusers/pipelines/ltx/pipeline_ltx_image2video.py` (0.42.1) step by step (step numbers in
comments are the pipeline's), written so gradients flow from every exposed quantity back to the image.

What the attack reads, as the pipeline computes it:
- The image enters only through the VAE (no image encoder): its latent, normalised with the VAE's
  `latents_mean` / `latents_std` (`prepare_latents`), *replaces* latent frame 0 of the noisy latents through a
  conditioning mask (one on latent frame 0, zero after): `image * mask + noisy * (1 - mask)`.
- Each token has its own timestep, `t * (1 - mask)`: 0 on the image's tokens, the step's t elsewhere.
- Latents are packed into tokens (B, F' * h * w, C) frame-major (the pipeline's `_pack_latents`), and the
  transformer's RoPE grid is that of the video: its latent frame count, height and width, scaled by
  `rope_interpolation_scale = (temporal compression / frame_rate, spatial, spatial)` (step 6). `denoise`
  derives all of it from the latents it is given, so an attack at a frame count sees the grid the pipeline
  uses for a video of that many frames.
- The text: T5 embeddings of a fixed prompt and their attention mask. They are encoded once when the target
  is made (the pipeline's `encode_prompt`), with the negative prompt's for classifier-free guidance, and the
  text encoder (T5-XXL, about 9 GB in bf16) is then dropped: `generate` hands the pipeline the embeddings.
- Noise levels are flow-matching sigmas (x_t = (1 - sigma) x0 + sigma noise, the scheduler's `scale_noise`);
  the transformer is given t = sigma * 1000 and predicts the velocity noise - x0. The checkpoints' schedule
  shifts its sigmas by mu, which grows with the video's token count (`calculate_shift`), and stretches them to
  end at `shift_terminal`.

Choices made here (not the pipeline's):
- The image latent is the VAE posterior's mode; the pipeline samples the posterior (deterministic attack).
- The prompt is `DEFAULT_PROMPT` (the attack does not know the animator's) and the negative prompt the
  pipeline's default, ""; both are fixed at load time, so `generate` takes no prompt option.
- `noise_levels` and `sample_noise_level` are those of the target's own video size and length (mu depends on
  them); `sample_noise_level`'s fraction 0 is the last step's sigma of the default schedule, 1 is sigma 1.
- `denoise`'s x0 keeps the image latent on latent frame 0, as the pipeline's latents do (its scheduler steps
  frames 1: only); its raw output is the transformer's on every frame.
- Working size 480 x 704, 161 frames at frame_rate 25 (the pipeline's example and default rate), 50 steps.

Temporal mixing is full 3D self-attention with 3D RoPE (`transformer_blocks[*].attn1`, video tokens only):
`LTXFrameAttentionRecorder` computes a frame-to-frame map from sampled queries (`cogvideox.frame_attention`),
never the full map (6,930 tokens at 480 x 704 x 161).
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXImageToVideoPipeline,
    LTXVideoTransformer3DModel,
)
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_ltx import (
    LTXAttention,
    LTXVideoAttnProcessor,
    LTXVideoRotaryPosEmbed,
    apply_rotary_emb,
)
from diffusers.pipelines.ltx.pipeline_ltx_image2video import calculate_shift

from .base import AttentionStore, Target, Video, normalize_to_neg_one_to_one
from .cogvideox import QUERIES_PER_FRAME, _tiny_tokenizer, frame_attention

#: what the target conditions on: the attack does not know the animator's prompt
DEFAULT_PROMPT = "The scene in the photo comes to life with natural, smooth motion."
#: the pipeline's default negative prompt (`encode_prompt`: negative_prompt or "")
NEGATIVE_PROMPT = ""
#: the pipeline's default max_sequence_length (T5 tokens)
TEXT_LENGTH = 128
#: the pipeline's default frame_rate (its RoPE's temporal scale is vae_temporal_compression / frame_rate)
FRAME_RATE = 25
#: working size and length: the pipeline's example (480 x 704, 161 frames = 21 latent frames of 15 x 22)
DEFAULT_SIZE = (480, 704, 161)

#: the checkpoints' scheduler_config.json (diffusers' scripts/convert_ltx_to_diffusers.py)
SCHEDULER_CONFIG = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                        max_image_seq_len=4096, shift_terminal=0.1)


class FrameRope(tuple):
    """(cos, sin) of LTX's 3D RoPE, knowing the number of token frames of the video it was made for."""

    frames: int


class FrameCountingRope(LTXVideoRotaryPosEmbed):
    """LTX's rotary embedding (the same values), returned as a `FrameRope`: the attention processor then knows
    the frame count of the very call it serves, also when a checkpointed block recomputes it in backward."""

    def forward(self, hidden_states, num_frames=None, height=None, width=None, rope_interpolation_scale=None,
                video_coords=None) -> FrameRope:
        rope = FrameRope(super().forward(hidden_states, num_frames, height, width, rope_interpolation_scale,
                                         video_coords))
        rope.frames = num_frames // self.patch_size_t
        return rope


class LTXFrameAttentionRecorder(LTXVideoAttnProcessor):
    """Processor for LTX's 3D self-attention (`transformer_blocks[*].attn1`).

    Its output is computed exactly as diffusers' `LTXVideoAttnProcessor` (0.42.1) computes it (the code below is
    that processor's, with the RoPE'd queries and keys kept aside). Whenever gradients are on or the store
    records, it also computes `frame_attention` on them ((B, heads, F', F'), with gradients) and adds it to the
    store; that it depends only on grad mode and the store means a checkpointed block recomputes in backward the
    operations of its forward (the store records in forward only). Outside both (generation) it is the stock
    processor."""

    def __init__(self, store: AttentionStore, queries_per_frame: int = QUERIES_PER_FRAME):
        super().__init__()
        self.store = store
        self.queries_per_frame = queries_per_frame

    def __call__(self, attn: LTXAttention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: FrameRope | None = None) -> torch.Tensor:
        # Copied from diffusers.models.transformers.transformer_ltx.LTXVideoAttnProcessor.__call__ (0.42.1)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        self_attention = encoder_hidden_states is None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states

        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb)
            key = apply_rotary_emb(key, image_rotary_emb)
        query = query.unflatten(2, (attn.heads, -1))  # (B, N, heads, d)
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))

        frames = getattr(image_rotary_emb, "frames", None)
        if frames is not None and self_attention and (self.store.enabled or torch.is_grad_enabled()):
            probs = frame_attention(query.transpose(1, 2), key.transpose(1, 2), frames, self.queries_per_frame)
            self.store.add(probs)  # (B, heads, F', F'); may raise StopForward (denoise with maps_only)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


class LTXTarget(Target):
    family = "ltx"
    #: frame_rate sets the temporal scale of the RoPE grid (step 6), so the attack conditions as the video is made
    condition_options = ("frame_rate",)
    generate_options = ("frame_rate", "guidance_scale", "decode_timestep", "decode_noise_scale")

    def __init__(self, pipe: LTXImageToVideoPipeline, name: str = "ltx-video", prompt: str = DEFAULT_PROMPT,
                 num_inference_steps: int = 50, queries_per_frame: int = QUERIES_PER_FRAME,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 frame_rate: int = FRAME_RATE, checkpointing: bool | None = None):
        """pipe: a loaded `LTXImageToVideoPipeline` with its text encoder (used here once, then dropped);
        prompt: what `condition` and `generate` use; height, width, num_frames: working size and length
        (default 480 x 704 x 161); frame_rate: the pipeline's option of that name, default 25."""
        super().__init__()
        if queries_per_frame < 1:
            raise ValueError(f"queries_per_frame must be >= 1, got {queries_per_frame}")
        if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
            raise ValueError(f"{name}: guard's LTX target needs the checkpoints' FlowMatchEulerDiscreteScheduler, "
                             f"got {type(pipe.scheduler).__name__}")
        self.pipe, self.name = pipe, name
        self.transformer, self.vae = pipe.transformer, pipe.vae
        self.denoiser = self.transformer
        for module in (self.transformer, self.vae):
            module.requires_grad_(False).eval()
        self.scheduler = pipe.scheduler
        self.device, self.dtype = self.transformer.device, self.transformer.dtype
        self.height, self.width = height or DEFAULT_SIZE[0], width or DEFAULT_SIZE[1]
        spatial = pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size
        if self.height % 32 or self.width % 32 or self.height % spatial or self.width % spatial:
            raise ValueError(f"height and width must be multiples of 32 (the pipeline's check_inputs), got "
                             f"{self.height} x {self.width}")
        self.num_frames = num_frames or DEFAULT_SIZE[2]
        self.check_num_frames(self.num_frames)
        self.frame_rate = frame_rate
        self.num_inference_steps = num_inference_steps
        self._check_steps(num_inference_steps)
        self.num_attention_layers = len(self.transformer.transformer_blocks)
        self.attention_layers = (
            f"the 3D self-attention of all {self.num_attention_layers} transformer blocks "
            f"(transformer_blocks[*].attn1): for {queries_per_frame} evenly spaced queries per latent frame, the "
            "softmax mass on each latent frame's keys, averaged over the queries; maps (B, heads, F', F')"
        )
        self.transformer.rope.__class__ = FrameCountingRope  # same module, frames attached to its output
        recorder = LTXFrameAttentionRecorder(self.attention_store, queries_per_frame)
        for block in self.transformer.transformer_blocks:
            block.attn1.set_processor(recorder)
        self._encode_prompts(prompt)
        # Block-level activation checkpointing for attack steps (default: on for CUDA, off on CPU)
        if checkpointing is None:
            checkpointing = self.device.type == "cuda"
        if checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.checkpointing = checkpointing

    @classmethod
    def from_pretrained(cls, path_or_id: str, device="cpu", dtype=torch.float32, **kwargs) -> "LTXTarget":
        """Hub id (Lightricks/LTX-Video) or local diffusers folder; kwargs go to the constructor. The text
        encoder is loaded, encodes the prompts once on `device`, and is freed."""
        pipe = LTXImageToVideoPipeline.from_pretrained(path_or_id, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), **kwargs)

    @torch.no_grad()
    def _encode_prompts(self, prompt: str) -> None:
        """3. The prompt's and the negative prompt's T5 embeddings (1, L, D) and masks (1, L) (the pipeline's
        `encode_prompt`, L = 128), kept in the transformer's dtype; then the text encoder is dropped."""
        self.prompt = prompt
        embeds, mask, negative, negative_mask = self.pipe.encode_prompt(
            prompt, NEGATIVE_PROMPT, do_classifier_free_guidance=True, num_videos_per_prompt=1,
            max_sequence_length=TEXT_LENGTH, device=self.device, dtype=self.dtype)
        self.prompt_embeds, self.prompt_attention_mask = embeds, mask
        self.negative_prompt_embeds, self.negative_prompt_attention_mask = negative, negative_mask
        self.drop_text_encoder()  # frees T5-XXL; `generate` passes the embeddings

    # -- shapes -----------------------------------------------------------------------------------
    def check_num_frames(self, num_frames: int | None) -> None:
        """A frame count must be 1 + a multiple of the VAE's temporal compression (8: 161 = 1 + 8 x 20 -> 21
        latent frames): the pipeline makes (F' - 1) x 8 + 1 frames from F' = (num_frames - 1) // 8 + 1 latent
        frames, so any other count would come out another length."""
        if num_frames is None:
            return
        temporal = self.pipe.vae_temporal_compression_ratio
        if num_frames < 1 or (num_frames - 1) % temporal != 0:
            raise ValueError(f"num_frames must be 1 + a multiple of {temporal} (e.g. {8 * temporal + 1}), "
                             f"got {num_frames}")

    def latent_frames(self, num_frames: int) -> int:
        self.check_num_frames(num_frames)
        return (num_frames - 1) // self.pipe.vae_temporal_compression_ratio + 1

    def _latent_size(self) -> tuple[int, int]:
        spatial = self.pipe.vae_spatial_compression_ratio
        return self.height // spatial, self.width // spatial

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F', h, w) -> tokens (B, F' h w, C) (p = p_t = 1): the pipeline's `_pack_latents`."""
        return self.pipe._pack_latents(latents, self.pipe.transformer_spatial_patch_size,
                                       self.pipe.transformer_temporal_patch_size)

    def unpack(self, tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """Tokens (B, S, C) -> (B, C, F', h, w): the pipeline's `_unpack_latents`."""
        return self.pipe._unpack_latents(tokens, frames, height, width, self.pipe.transformer_spatial_patch_size,
                                         self.pipe.transformer_temporal_patch_size)

    def conditioning_mask(self, frames: int, height: int, width: int) -> torch.Tensor:
        """4. `prepare_latents`' conditioning mask (1, 1, F', h, w): one on latent frame 0 (the image), zero after."""
        mask = torch.zeros(1, 1, frames, height, width, device=self.device)
        mask[:, :, 0] = 1.0
        return mask

    # -- image side -------------------------------------------------------------------------------
    def _normalise(self, latents: torch.Tensor, scaling_factor: float = 1.0) -> torch.Tensor:
        """(latents - latents_mean) * scaling_factor / latents_std on channel axis 1: the pipeline's
        `_normalize_latents` (float32)."""
        return self.pipe._normalize_latents(latents.float(), self.vae.latents_mean.float(),
                                            self.vae.latents_std.float(), scaling_factor)

    def image_latents(self, image: torch.Tensor) -> torch.Tensor:
        """The image's latent (B, C, h, w) as `prepare_latents` makes it: the VAE latent of the image as a
        one-frame video (posterior mode here, a sample there), normalised (scaling factor 1, as there)."""
        x = normalize_to_neg_one_to_one(image.float()).unsqueeze(2)  # (B, 3, 1, H, W) in [-1, 1]
        latents = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()  # (B, C, 1, h, w)
        return self._normalise(latents)[:, :, 0]

    def _condition(self, image: torch.Tensor, generator: torch.Generator | None,
                   frame_rate: int | None = None) -> dict:
        """Everything `denoise` needs, for a video of any frame count.

        "image_latents" (B, C, h, w): what replaces latent frame 0; "prompt_embeds" (1, L, D) and
        "prompt_attention_mask" (1, L) from `self.prompt` (no gradient); "rope_interpolation_scale": the
        pipeline's step-6 tuple for `frame_rate` (default: the target's). `generator` is unused: the latent is
        the posterior mode."""
        frame_rate = self.frame_rate if frame_rate is None else frame_rate
        # 6. Prepare micro-conditions
        rope_interpolation_scale = (self.pipe.vae_temporal_compression_ratio / frame_rate,
                                    self.pipe.vae_spatial_compression_ratio, self.pipe.vae_spatial_compression_ratio)
        return {
            "image_latents": self.image_latents(image),
            "prompt_embeds": self.prompt_embeds,
            "prompt_attention_mask": self.prompt_attention_mask,
            "rope_interpolation_scale": rope_interpolation_scale,
        }

    # -- video side -------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Latents (B, F', C, h, w) of frames (B, F, 3, H, W) in [0, 1] (posterior mode, normalised with the
        VAE's scaling factor, the inverse of the pipeline's `_denormalize_latents` before decoding): the space
        the pipeline denoises in. F must be a frame count the pipeline makes (`check_num_frames`): the VAE would
        encode 8 frames to the 2 latent frames of a 5-frame video, whose RoPE grid the attack would then read."""
        self.check_num_frames(frames.shape[1])
        x = normalize_to_neg_one_to_one(frames.float()).transpose(1, 2)  # (B, 3, F, H, W)
        latents = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()  # (B, C, F', h, w)
        return self._normalise(latents, self.vae.config.scaling_factor).transpose(1, 2)

    def _mu(self, num_frames: int, height: int, width: int) -> float:
        """5. The schedule's shift for a video: `calculate_shift` of its token count with the scheduler's config."""
        h, w = height // self.pipe.vae_spatial_compression_ratio, width // self.pipe.vae_spatial_compression_ratio
        config = self.scheduler.config
        return calculate_shift(self.latent_frames(num_frames) * h * w, config.get("base_image_seq_len", 256),
                               config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                               config.get("max_shift", 1.15))

    def _check_steps(self, steps: int) -> None:
        """The stretch to shift_terminal divides by 1 - (the last sigma), which is 1 - 1 at one step: diffusers'
        schedule is NaN there, so LTX needs at least 2 steps."""
        if steps < (2 if self.scheduler.config.shift_terminal else 1):
            raise ValueError(f"num_inference_steps must be >= 2 for LTX-Video (its schedule is stretched to end at "
                             f"shift_terminal), got {steps}")

    def noise_levels(self, num_inference_steps: int | None = None) -> torch.Tensor:
        """The sigmas of the pipeline's steps for the target's video (step 5: linspace(1, 1/n, n), shifted
        by mu of its token count, stretched to shift_terminal), most noise first."""
        n = num_inference_steps or self.num_inference_steps
        self._check_steps(n)
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(n, device=self.device, sigmas=np.linspace(1.0, 1 / n, n),
                                mu=self._mu(self.num_frames, self.height, self.width))
        return scheduler.sigmas[:-1]

    def _sample_noise_level(self, batch_size: int, generator: torch.Generator | None, low: float,
                            high: float) -> torch.Tensor:
        """Sigmas (batch_size,) at uniform fractions u of the default schedule: the unshifted sigma
        1/n + u (1 - 1/n) (n = the default steps) through the scheduler's shift and its stretch to
        shift_terminal for that schedule (`set_timesteps` steps 2-3), so u = 1 is sigma 1 and u = 0 the last step's."""
        device = generator.device if generator is not None else "cpu"
        u = low + (high - low) * torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
        n = self.num_inference_steps
        s = torch.cat([1 / n + u.cpu() * (1 - 1 / n), torch.tensor([1 / n], dtype=torch.float64)])
        config = self.scheduler.config
        if config.use_dynamic_shifting:
            s = self.scheduler.time_shift(self._mu(self.num_frames, self.height, self.width), 1.0, s)
        else:
            s = config.shift * s / (1 + (config.shift - 1) * s)
        if config.shift_terminal:
            s = self.scheduler.stretch_shift_to_terminal(s)  # stretched as the schedule ending at 1/n is
        return s[:-1].float().to(self.device)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """(1 - sigma) x + sigma noise (the scheduler's `scale_noise`)."""
        sigma = level.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
        return (1 - sigma) * latents + sigma * noise

    def denoise(self, noisy_latents: torch.Tensor, level: torch.Tensor, cond: dict, maps_only: bool = False,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One conditional transformer call (no CFG) on noisy latents (B, F', C, h, w) at sigmas `level` (B,),
        as step 7 of the pipeline makes it for a video of F' latent frames: latent frame 0 replaced by the image
        latent, per-token timesteps t (1 - mask), packed tokens, the RoPE grid of F' x h x w.

        Returns (velocity prediction, predicted x0 = x_t - sigma * prediction), float32, shaped like the input;
        x0's frame 0 is the image latent (the pipeline never steps it). (None, None) with maps_only."""
        b, f, _, h, w = noisy_latents.shape
        self.check_num_frames((f - 1) * self.pipe.vae_temporal_compression_ratio + 1)
        image = cond["image_latents"].float()[:, :, None]  # (B or 1, C, 1, h, w)
        mask = self.conditioning_mask(f, h, w)
        # 4. prepare_latents: init_latents * conditioning_mask + noise * (1 - conditioning_mask)
        latents = image * mask + noisy_latents.float().transpose(1, 2) * (1 - mask)  # (B, C, F', h, w)
        tokens = self.pack(latents)  # (B, F' h w, C)
        packed_mask = self.pack(mask).squeeze(-1)  # (1, F' h w)
        # 7. the scheduler's timestep is sigma * num_train_timesteps; each token gets t * (1 - mask)
        t = level.float().to(self.device).expand(b) * self.scheduler.config.num_train_timesteps
        timestep = t.unsqueeze(-1) * (1 - packed_mask)  # (B, F' h w)
        out = self._run_denoiser(lambda: self.transformer(
            hidden_states=tokens.to(self.dtype),
            encoder_hidden_states=cond["prompt_embeds"].to(self.dtype).expand(b, -1, -1),
            timestep=timestep,
            encoder_attention_mask=cond["prompt_attention_mask"].expand(b, -1),
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=cond["rope_interpolation_scale"],
            attention_kwargs=None,
            return_dict=False,
        )[0], maps_only)
        if out is None:
            return None, None
        out = self.unpack(out.float(), f, h, w).transpose(1, 2)  # (B, F', C, h, w)
        sigma = level.float().view(-1, 1, 1, 1, 1).to(out.device)
        x0 = noisy_latents.float() - sigma * out
        x0 = torch.cat([image.transpose(1, 2).expand(b, -1, -1, -1, -1), x0[:, 1:]], dim=1)
        return out, x0

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, image: PIL.Image.Image, seed: int, num_frames: int | None, num_inference_steps: int | None,
                  return_latents: bool, callback, frame_rate: int | None = None, guidance_scale: float | None = None,
                  decode_timestep: float | None = None, decode_noise_scale: float | None = None) -> Video:
        """The pipeline's own output_type="np" frames with `self.prompt` (embeddings encoded at load time);
        options None: the target's frame_rate, else the pipeline's defaults (guidance 3, decode_timestep 0).
        Latents in guard's layout (B, F', C, h, w), image frame included: the pipeline's last ones."""
        num_frames = num_frames or self.num_frames
        self.check_num_frames(num_frames)
        steps = num_inference_steps or self.num_inference_steps
        self._check_steps(steps)
        frame_rate = self.frame_rate if frame_rate is None else frame_rate
        options = {name: value for name, value in (("guidance_scale", guidance_scale),
                                                   ("decode_timestep", decode_timestep),
                                                   ("decode_noise_scale", decode_noise_scale)) if value is not None}
        image = image.convert("RGB")  # any size: the pipeline resizes it (Target.generate)
        report, last = self.step_callback(callback, steps), {}

        def on_step_end(pipe, i, t, tensors):
            last["latents"] = tensors["latents"]  # packed (1, S, C), after the step
            return report(pipe, i, t, tensors)

        generator = torch.Generator(self.device).manual_seed(seed)
        frames = self.pipe(
            image, prompt_embeds=self.prompt_embeds, prompt_attention_mask=self.prompt_attention_mask,
            negative_prompt_embeds=self.negative_prompt_embeds,
            negative_prompt_attention_mask=self.negative_prompt_attention_mask,
            height=self.height, width=self.width, num_frames=num_frames, frame_rate=frame_rate,
            num_inference_steps=steps, generator=generator, output_type="np", callback_on_step_end=on_step_end,
            max_sequence_length=TEXT_LENGTH, **options).frames[0]  # (F, H, W, 3) in [0, 1]
        frames = (frames * 255).round().astype(np.uint8)
        latents = None
        if return_latents:
            h, w = self._latent_size()
            latents = self.unpack(last["latents"], self.latent_frames(num_frames), h, w).transpose(1, 2)
        settings = dict(model=self.name, seed=seed, num_frames=num_frames, num_inference_steps=steps,
                        height=self.height, width=self.width, prompt=self.prompt, frame_rate=frame_rate, **options)
        return Video(frames=frames, latents=latents, settings=settings)


# -- builders ----------------------------------------------------------------------------------------
def tiny_ltx(device="cpu", dtype=torch.float32, seed: int = 0) -> LTXTarget:
    """A random-weight LTX-Video small enough for CPU tests, built offline: transformer and VAE configs as in
    diffusers' fast test (tests/pipelines/ltx/test_ltx_image2video.py: 4x spatial and temporal compression,
    8 latent channels) but 2 transformer layers, a seeded non-trivial latents_mean / latents_std, a T5 encoder
    from a T5Config with a tokenizer built in memory, and the checkpoints' scheduler (dynamic shift,
    shift_terminal 0.1). 32 x 64, 9 frames (3 latent frames of 8 x 16 tokens), 3 steps."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=2, caption_channels=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    # the checkpoints' statistics are not zero / one: make a skipped normalisation show
    g = torch.Generator().manual_seed(seed)
    vae.latents_mean.copy_(0.1 * torch.randn(8, generator=g))
    vae.latents_std.copy_(0.5 + torch.rand(8, generator=g))
    words = sorted({w.strip(".,").lower() for w in DEFAULT_PROMPT.split()} | {"a", "the", "camera", "moves"})
    tokenizer = _tiny_tokenizer(words)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1,
    ))
    pipe = LTXImageToVideoPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), vae=vae,
                                   text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    # built in float32; cast only when asked (a cast to float32 makes diffusers log a warning)
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    return LTXTarget(pipe, name="tiny-ltx", num_inference_steps=3, height=32, width=64, num_frames=9)


def random_ltx_video(device="cuda", dtype=torch.bfloat16) -> LTXTarget:
    """LTX-Video 0.9.1 2B with random weights, for GPU benchmarks (timing depends on shapes, not weights): the
    transformer's config is diffusers' default (the 2B: 28 blocks of 32 x 64, 128 channels), the VAE's that of
    0.9.1 (diffusers' scripts/convert_ltx_to_diffusers.py: timestep-conditioned decoder with noise injection),
    the checkpoints' scheduler. T5-XXL runs once per prompt at load time: a 1-layer stand-in with the real
    4096-wide output keeps the transformer's inputs real-shaped. 480 x 704, 161 frames, 50 steps."""
    from transformers import T5Config, T5EncoderModel

    with torch.device(device):
        transformer = LTXVideoTransformer3DModel().to(dtype)
        vae = AutoencoderKLLTXVideo(
            latent_channels=128, block_out_channels=(128, 256, 512, 512), decoder_block_out_channels=(256, 512, 1024),
            layers_per_block=(4, 3, 3, 3, 4), decoder_layers_per_block=(5, 6, 7, 8),
            spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True),
            decoder_inject_noise=(False, True, True, True), upsample_residual=(True, True, True),
            upsample_factor=(2, 2, 2), timestep_conditioning=True, patch_size=4, patch_size_t=1,
            resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True, decoder_causal=False,
        ).to(dtype)
        tokenizer = _tiny_tokenizer(["the", "scene"])
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=4096, d_kv=8, d_ff=64,
                                               num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                                               feed_forward_proj="gated-gelu")).to(dtype)
    pipe = LTXImageToVideoPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), vae=vae,
                                   text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return LTXTarget(pipe.to(device), name="ltx-video-2b (random weights)")
