"""CogVideoX image-to-video (THUDM/CogVideoX-5b-I2V; CogVideoX1.5-5B-I2V loads too, and its paths
have their own tiny builder, `tiny_cogvideox15`).

The diffusers pipeline (`CogVideoXImageToVideoPipeline`) runs under `torch.no_grad()`, so an attack
calls the components itself. Everything below mirrors
`diffusers/pipelines/cogvideo/pipeline_cogvideox_image2video.py` step by step (the step numbers in
comments are the pipeline's), written so gradients flow from every exposed quantity back to the image.

What differs from SVD:
- The image enters only through the VAE: its latent (times `scaling_factor`) is zero-padded along
  frames to the latent frame count and concatenated to the noisy latents on channels (16 + 16).
  There is no image embedding and no noise augmentation; the pipeline *samples* the VAE posterior,
  the attack uses its mode (deterministic).
- The denoiser is a transformer with full 3D attention over [text tokens | video tokens] through SDPA,
  so no attention map exists anywhere. `FrameAttentionRecorder` computes a frame-to-frame map from a
  fixed subsample of video queries, never the full map (about 30 GB per layer at 480 x 720 x 49).
- Noise levels are integer DDPM timesteps (v-prediction, zero-terminal-SNR schedule).
"""

from __future__ import annotations


import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXTransformer3DModel,
)
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb
from torch.utils.checkpoint import checkpoint

from .base import AttentionStore, Target, Video, normalize_to_neg_one_to_one

#: what the target conditions on when the caller gives no prompt: the attack does not know the
#: animator's prompt, so it uses a generic motion prompt (CogVideoX is almost always run with one).
DEFAULT_PROMPT = "The scene in the photo comes to life with natural, smooth motion."

#: video queries sampled per latent frame for the frame-to-frame maps
QUERIES_PER_FRAME = 64

#: CogVideoX1.5-5B-I2V has no single training size (its config's sample size, 300 x 300 latents, is not
#: one); its model card recommends 768 x 1360 (min side 768, max side <= 1360, multiple of 16).
COGVIDEOX15_SIZE = (768, 1360)


def sample_query_indices(tokens_per_frame: int, queries_per_frame: int) -> torch.Tensor:
    """Evenly spaced token indices inside one frame: `queries_per_frame` of them (all tokens when the
    frame has fewer), with a fixed stride so that every call samples the same queries."""
    n = min(queries_per_frame, tokens_per_frame)
    return torch.arange(n) * tokens_per_frame // n


def _frame_mass(scores: torch.Tensor, num_frames: int) -> torch.Tensor:
    """scores (..., Q, F*S) -> mean over queries of the softmax mass per key frame, (..., F).

    softmax over the keys then a sum per frame equals a softmax over the frames of the per-frame
    logsumexp; this way no probability tensor is kept besides the scores."""
    lse = scores.unflatten(-1, (num_frames, -1)).logsumexp(dim=-1)  # (..., Q, F)
    return lse.softmax(dim=-1).mean(dim=-2)


def frame_attention(query: torch.Tensor, key: torch.Tensor, num_frames: int,
                    queries_per_frame: int = QUERIES_PER_FRAME) -> torch.Tensor:
    """Frame-to-frame attention A (B, heads, F, F) from video queries and keys (B, heads, F*S, d).

    Tokens are frame-major (F frames of S tokens each), as CogVideoX's patch embedding lays them out.
    For each frame i, `sample_query_indices(S, queries_per_frame)` queries of that frame attend with
    softmax(q k^T / sqrt(d)); A[b, h, i, j] is the probability mass they put on the keys of frame j,
    averaged over the sampled queries. Rows sum to one.

    Only video keys enter the softmax. In the model the softmax also covers the text keys; dropping
    them is the same as renormalising the full softmax over the video keys (the ratios between video
    keys do not depend on the text keys), so A is "where in the video a frame looks".

    Memory: one frame's sampled queries at a time, (B, heads, Q, F*S) scores in float32 (~0.2 GB at
    480 x 720 x 49 with 48 heads), each chunk checkpointed when gradients are on, so backward
    recomputes it instead of keeping every chunk's scores alive across all layers.
    """
    b, heads, n, d = query.shape
    tokens_per_frame = n // num_frames
    assert tokens_per_frame * num_frames == n, f"{n} video tokens do not split into {num_frames} frames"
    idx = sample_query_indices(tokens_per_frame, queries_per_frame).to(query.device)
    queries = query.unflatten(2, (num_frames, tokens_per_frame))[:, :, :, idx]  # (B, heads, F, Q, d)
    key_t = key.float().transpose(-1, -2) * d**-0.5  # (B, heads, d, F*S)

    def one_frame(q: torch.Tensor, k_t: torch.Tensor) -> torch.Tensor:
        return _frame_mass(q.float() @ k_t, num_frames)  # (B, heads, F)

    rows = []
    for i in range(num_frames):
        q = queries[:, :, i]  # (B, heads, Q, d)
        if torch.is_grad_enabled() and (q.requires_grad or key_t.requires_grad):
            rows.append(checkpoint(one_frame, q, key_t, use_reentrant=False))
        else:
            rows.append(one_frame(q, key_t))
    return torch.stack(rows, dim=2)  # (B, heads, F, F)


class FrameAttentionRecorder:
    """Processor for CogVideoX's 3D full attention (`transformer_blocks[*].attn1`).

    Its output is computed exactly as diffusers' `CogVideoXAttnProcessor2_0` computes it (the code
    below is that processor's, with the video queries and keys kept aside). When the transformer is
    called with `attention_kwargs={"frame_map_frames": F}` (F = frames of video tokens; `denoise` does
    this inside `capture_attention`), it also computes `frame_attention` on the RoPE'd video queries
    and keys and adds it to the store: (B, heads, F, F) with gradients.

    Whether the map is computed depends only on the call's arguments, so a gradient-checkpointed
    block recomputes the same operations in backward; maps are stored in forward only
    (`AttentionStore.add`, which also stops the forward here when `denoise` runs with maps_only).
    """

    def __init__(self, store: AttentionStore, queries_per_frame: int = QUERIES_PER_FRAME):
        self.store = store
        self.queries_per_frame = queries_per_frame

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: torch.Tensor | None = None,
                 frame_map_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # (B, L+N, C)
        batch_size, sequence_length, _ = hidden_states.shape

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, L+N, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        # Apply RoPE if needed (video tokens only)
        if image_rotary_emb is not None:
            query[:, :, text_seq_length:] = apply_rotary_emb(query[:, :, text_seq_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_seq_length:] = apply_rotary_emb(key[:, :, text_seq_length:], image_rotary_emb)

        if frame_map_frames is not None:
            probs = frame_attention(query[:, :, text_seq_length:], key[:, :, text_seq_length:],
                                    frame_map_frames, self.queries_per_frame)
            self.store.add(probs)

        hidden_states = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states


class CogVideoXTarget(Target):
    family = "cogvideox"
    # no motion conditioning: the image, the prompt and the noise level are all the transformer sees
    condition_options = ()
    generate_options = ("prompt", "negative_prompt", "guidance_scale", "use_dynamic_cfg")

    def __init__(self, pipe: CogVideoXImageToVideoPipeline, name: str = "cogvideox",
                 prompt: str = DEFAULT_PROMPT, num_inference_steps: int = 50,
                 queries_per_frame: int = QUERIES_PER_FRAME, height: int | None = None,
                 width: int | None = None, checkpointing: bool | None = None, negative_prompt: str = ""):
        """pipe: a loaded I2V pipeline with its text encoder; prompt: what `condition` and `generate` condition
        on, negative_prompt: what classifier-free guidance steers away from ("" is the pipeline's default),
        both encoded here once, after which the text encoder is dropped (`pipe.text_encoder` is None: T5-XXL
        holds about 9.5 GB in bf16 and guard never encodes another prompt); queries_per_frame: video queries
        sampled per latent frame for the attention maps;
        height, width: working resolution (default: the transformer's sample size, 480 x 720 for
        CogVideoX-5b-I2V; 768 x 1360 for 1.5)."""
        super().__init__()
        if queries_per_frame < 1:
            raise ValueError(f"queries_per_frame must be >= 1, got {queries_per_frame}")
        self.pipe, self.name = pipe, name
        self.transformer, self.vae = pipe.transformer, pipe.vae
        self.denoiser = self.transformer
        for module in (self.transformer, self.vae):
            module.requires_grad_(False).eval()
        self.scheduler = pipe.scheduler
        self.device, self.dtype = self.transformer.device, self.transformer.dtype
        config = self.transformer.config
        if config.patch_size_t is not None and height is None and width is None:
            height, width = COGVIDEOX15_SIZE
        self.height = height or config.sample_height * pipe.vae_scale_factor_spatial
        self.width = width or config.sample_width * pipe.vae_scale_factor_spatial
        self.num_frames = config.sample_frames
        self.num_inference_steps = num_inference_steps
        self.num_attention_layers = config.num_layers
        self.attention_layers = (
            f"the 3D full attention of all {config.num_layers} transformer blocks "
            "(transformer_blocks[*].attn1, text and video tokens together): for "
            f"{queries_per_frame} evenly spaced video queries per latent frame, the softmax mass on "
            "each latent frame's video keys (renormalised over video keys, text keys left out), "
            "averaged over the queries; maps (B, heads, F', F')"
        )
        # One processor instance for every layer; it only computes maps when `denoise` asks.
        self.transformer.set_attn_processor(FrameAttentionRecorder(self.attention_store, queries_per_frame))
        self._encode_prompts(prompt, negative_prompt)
        # Block-level activation checkpointing for attack steps (default: on for CUDA, where a 5B
        # attack step then peaks at about 22 GiB, measured on an H100; off on CPU)
        if checkpointing is None:
            checkpointing = self.device.type == "cuda"
        if checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.checkpointing = checkpointing

    @classmethod
    def from_pretrained(cls, path_or_id: str, device="cpu", dtype=torch.float32, **kwargs) -> "CogVideoXTarget":
        """Hub id (THUDM/CogVideoX-5b-I2V) or local diffusers folder; kwargs go to the constructor."""
        pipe = CogVideoXImageToVideoPipeline.from_pretrained(path_or_id, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), **kwargs)

    @torch.no_grad()
    def _encode_prompts(self, prompt: str, negative_prompt: str) -> None:
        """Encode both prompts once with the pipeline's `encode_prompt` (T5, max_text_seq_length tokens, in
        the target's dtype, as the pipeline encodes them), then drop the text encoder."""
        if self.pipe.text_encoder is None:
            raise ValueError(f"{self.name}: the pipeline has no text encoder to encode the prompt {prompt!r}")
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.prompt_embeds, self.negative_prompt_embeds = self.pipe.encode_prompt(
            prompt, negative_prompt, do_classifier_free_guidance=True, num_videos_per_prompt=1,
            max_sequence_length=self.transformer.config.max_text_seq_length,
            device=self.device, dtype=self.dtype,
        )  # (1, L, D) each
        self.drop_text_encoder()

    # -- shapes -----------------------------------------------------------------------------------
    def check_num_frames(self, num_frames: int | None) -> None:
        """A frame count must be 1 + a multiple of the VAE's temporal factor (4); and a transformer with
        learned positional embeddings (CogVideoX-5b-I2V) must run at exactly its `sample_frames` (49):
        at any other count diffusers' CogVideoXPatchEmbed silently replaces the learned embedding with
        a sin-cos one the model was never trained with (a video of other length would come from a
        different model, and an attack on it would optimise a transformer the real video never runs)."""
        if num_frames is None:
            return
        temporal = self.pipe.vae_scale_factor_temporal
        if num_frames < 1 or (num_frames - 1) % temporal != 0:
            raise ValueError(f"num_frames must be 1 + a multiple of {temporal} (e.g. 49), got {num_frames}")
        config = self.transformer.config
        if config.use_learned_positional_embeddings and num_frames != config.sample_frames:
            raise ValueError(f"{self.name} makes {config.sample_frames}-frame videos only (its learned positional "
                             f"embedding is replaced by another one at any other length), got {num_frames} frames")

    def _latent_frames(self, num_frames: int) -> tuple[int, int]:
        """(latent frames, padding frames the transformer prepends): 49 frames -> (13, 0) for
        CogVideoX; CogVideoX1.5 (patch_size_t 2) needs an even count, so 81 -> (21, 1)."""
        self.check_num_frames(num_frames)
        latent_frames = (num_frames - 1) // self.pipe.vae_scale_factor_temporal + 1
        p_t = self.transformer.config.patch_size_t
        extra = 0 if p_t is None or latent_frames % p_t == 0 else p_t - latent_frames % p_t
        return latent_frames, extra

    # -- image side -------------------------------------------------------------------------------
    def image_latents(self, image: torch.Tensor) -> torch.Tensor:
        """VAE latent of an image (B, 3, H, W) in [0, 1], as `prepare_latents` conditions on it, but
        with the posterior's mode instead of a sample: (B, C, h, w), times `scaling_factor` (divided
        by it for VAEs with `invert_scale_latents`, i.e. CogVideoX1.5)."""
        x = normalize_to_neg_one_to_one(image).to(self.vae.dtype).unsqueeze(2)  # (B, 3, 1, H, W)
        latents = self.vae.encode(x).latent_dist.mode()[:, :, 0]  # (B, C, h, w)
        scale = self.vae.config.scaling_factor
        latents = latents / scale if self.vae.config.invert_scale_latents else latents * scale
        return latents.to(self.dtype)

    def _pad_image_latents(self, image_latents: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """(B, C, h, w) -> (B, num_latent_frames, C, h, w): the image at frame 0, zeros after it."""
        padding = image_latents.new_zeros(image_latents.shape[0], num_latent_frames - 1, *image_latents.shape[1:])
        return torch.cat([image_latents.unsqueeze(1), padding], dim=1)

    def _transformer_inputs(self, num_latent_frames: int, height: int, width: int) -> dict:
        """Rotary embeddings and the ofs embedding input, as steps 7 and 8 of the pipeline make them."""
        rotary = None
        if self.transformer.config.use_rotary_positional_embeddings:
            rotary = self.pipe._prepare_rotary_positional_embeddings(height, width, num_latent_frames, self.device)
        # CogVideoX1.5 I2V only; the pipeline always passes 2.0
        ofs = None if self.transformer.config.ofs_embed_dim is None else torch.full((1,), 2.0, device=self.device,
                                                                                   dtype=self.dtype)
        return {"image_rotary_emb": rotary, "ofs": ofs}

    def _condition(self, image: torch.Tensor, generator: torch.Generator | None) -> dict:
        """Everything `denoise` needs, for videos of `self.num_frames` frames.

        "image_latents" (B, C, h, w) = `image_latents(image)`; "image_latents_padded" (B, F', C, h, w)
        what the transformer concatenates on channels; "prompt_embeds" (1, L, D) from `self.prompt`
        (no gradient); "image_rotary_emb" (cos, sin) or None; "ofs" or None.
        `generator` is unused: CogVideoX has no noise augmentation and the latent is the posterior mode."""
        latents = self.image_latents(image)
        latent_frames, extra = self._latent_frames(self.num_frames)
        return {
            "image_latents": latents,
            "image_latents_padded": self._pad_image_latents(latents, latent_frames + extra),
            "prompt_embeds": self.prompt_embeds,
            **self._transformer_inputs(latent_frames + extra, self.height, self.width),
        }

    # -- video side -------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Latents (B, F', C, h, w) of frames (B, F, 3, H, W) in [0, 1] (posterior mode) times
        `scaling_factor`: the space the pipeline denoises in (its `decode_latents` divides by it)."""
        x = normalize_to_neg_one_to_one(frames).to(self.vae.dtype).transpose(1, 2)  # (B, 3, F, H, W)
        latents = self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor  # (B, C, F', h, w)
        return latents.transpose(1, 2).to(self.dtype)

    def _sample_noise_level(self, batch_size: int, generator: torch.Generator | None, low: float,
                            high: float) -> torch.Tensor:
        """Integer timesteps (batch_size,), uniform over [round(low * (T - 1)), round(high * (T - 1))],
        T = the scheduler's num_train_timesteps (1000)."""
        last = self.scheduler.config.num_train_timesteps - 1
        lo, hi = round(low * last), round(high * last)
        device = generator.device if generator is not None else "cpu"
        t = torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=device)
        return t.to(self.device)

    def noise_levels(self, num_inference_steps: int | None = None) -> torch.Tensor:
        """The timesteps of the pipeline's steps (integers, most noise first)."""
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps, device=self.device)
        return scheduler.timesteps

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) noise (the scheduler's `add_noise`)."""
        return self.scheduler.add_noise(latents, noise, level)

    def predict_x0(self, noisy_latents: torch.Tensor, v: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Clean latents from a v-prediction: x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v
        (what `CogVideoXDDIMScheduler.step` computes as pred_original_sample)."""
        alpha_bar = self.scheduler.alphas_cumprod.to(v.device)[level.to(v.device)].float()
        alpha_bar = alpha_bar.view(-1, *([1] * (v.ndim - 1)))
        return alpha_bar.sqrt() * noisy_latents.float() - (1 - alpha_bar).sqrt() * v.float()

    def denoise(self, noisy_latents: torch.Tensor, level: torch.Tensor, cond: dict, maps_only: bool = False,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One conditional transformer call (no CFG) on noisy latents (B, F', C, h, w) at timesteps
        `level` (B,). Returns (v-prediction, predicted x0), both float32 and shaped like the input;
        (None, None) with maps_only (the forward stops after the last captured block).

        A cond made for one image serves a batch of noisy latents (EOT). For CogVideoX1.5 with an odd
        F', the pipeline denoises one extra leading latent frame and drops it at the end; here that
        frame is a copy of the first noisy frame and its prediction is dropped. F' must be a latent
        frame count `generate` can make (`check_num_frames`): the positional embedding is the video's."""
        b, f, _, h, w = noisy_latents.shape
        self.check_num_frames((f - 1) * self.pipe.vae_scale_factor_temporal + 1)
        extra = 0
        if self.transformer.config.patch_size_t is not None:
            extra = -f % self.transformer.config.patch_size_t
        model_input = noisy_latents
        if extra:
            model_input = torch.cat([noisy_latents[:, :1].expand(-1, extra, -1, -1, -1), noisy_latents], dim=1)

        image_latents = cond.get("image_latents_padded")
        inputs = {"image_rotary_emb": cond["image_rotary_emb"], "ofs": cond["ofs"]}
        if image_latents is None or image_latents.shape[1] != f + extra:  # another video length
            image_latents = self._pad_image_latents(cond["image_latents"], f + extra)
            inputs = self._transformer_inputs(f + extra, h * self.pipe.vae_scale_factor_spatial,
                                              w * self.pipe.vae_scale_factor_spatial)
        if image_latents.shape[0] != b:
            image_latents = image_latents.expand(b, -1, -1, -1, -1)
        model_input = torch.cat([model_input.to(self.dtype), image_latents.to(self.dtype)], dim=2)  # (B, F', 2C, h, w)

        attention_kwargs = None
        if self.attention_store.enabled:
            # frames of video tokens: latent frames, grouped by patch_size_t in CogVideoX1.5
            token_frames = (f + extra) // (self.transformer.config.patch_size_t or 1)
            attention_kwargs = {"frame_map_frames": token_frames}
        prompt_embeds = cond["prompt_embeds"].to(self.dtype)
        v = self._run_denoiser(lambda: self.transformer(
            hidden_states=model_input,
            encoder_hidden_states=prompt_embeds.expand(b, -1, -1),
            timestep=level.to(self.device).expand(b),
            ofs=inputs["ofs"],
            image_rotary_emb=inputs["image_rotary_emb"],
            attention_kwargs=attention_kwargs,
            return_dict=False,
        )[0], maps_only)
        if v is None:
            return None, None
        v = v.float()[:, extra:]
        return v, self.predict_x0(noisy_latents, v, level)

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, image: PIL.Image.Image, seed: int, num_frames: int | None, num_inference_steps: int | None,
                  return_latents: bool, callback, prompt: str | None = None, negative_prompt: str | None = None,
                  guidance_scale: float | None = None, use_dynamic_cfg: bool | None = None) -> Video:
        """prompt, negative_prompt: None or the target's own (`prompt_inputs`: the pipeline gets their
        embeddings); the other options None: the pipeline's defaults (guidance 6, no dynamic guidance).
        The latents are returned without the padding frame CogVideoX1.5 adds."""
        num_frames = num_frames or self.num_frames
        steps = num_inference_steps or self.num_inference_steps
        _, extra = self._latent_frames(num_frames)  # validates num_frames
        embeddings = self.prompt_inputs(prompt, negative_prompt)
        options = {name: value for name, value in (("guidance_scale", guidance_scale),
                                                   ("use_dynamic_cfg", use_dynamic_cfg)) if value is not None}
        image = image.convert("RGB")  # any size: the pipeline resizes it (Target.generate)

        generator = torch.Generator(self.device).manual_seed(seed)
        latents = self.pipe(image, height=self.height, width=self.width, num_frames=num_frames,
                            num_inference_steps=steps, generator=generator, output_type="latent",
                            callback_on_step_end=self.step_callback(callback, steps),
                            max_sequence_length=self.transformer.config.max_text_seq_length,
                            **embeddings, **options).frames  # (1, F'+extra, C, h, w)
        # decode exactly as the pipeline does for output_type="pil": drop padding, decode, 8 bits
        latents = latents[:, extra:]
        video = self.pipe.decode_latents(latents)  # (1, 3, F, H, W) in [-1, 1]
        frames = self.pipe.video_processor.postprocess_video(video=video, output_type="np")[0]  # (F, H, W, 3)
        frames = (frames * 255).round().astype(np.uint8)
        settings = dict(model=self.name, seed=seed, num_frames=num_frames, num_inference_steps=steps,
                        height=self.height, width=self.width, prompt=self.prompt,
                        negative_prompt=self.negative_prompt, **options)
        return Video(frames=frames, latents=latents if return_latents else None, settings=settings)


def _tiny_tokenizer(words: list[str]):
    """A T5-like word-level tokenizer built in memory: lower-cased words, unknown words -> <unk>,
    '</s>' appended, '<pad>' = 0 (T5's ids for pad and eos)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_cogvideox(device="cpu", dtype=torch.float32, seed: int = 0) -> CogVideoXTarget:
    """A random-weight CogVideoX I2V small enough for CPU tests, built offline: configs as in diffusers'
    fast test (tests/pipelines/cogvideo/test_cogvideox_image2video.py), but 2 transformer layers, a
    T5 encoder from a T5Config, a tokenizer built in memory, and the scheduler settings of
    CogVideoX-5b-I2V. 64 x 96 (480 x 720's aspect), 17 frames (5 latent frames of 4 x 6 tokens), 3 steps.
    Like 5b-I2V it has learned positional embeddings for its own frame count only, so a test can see an
    attack run at another count (diffusers would substitute sin-cos embeddings there)."""
    pipe = _tiny_pipeline(seed, transformer=dict(use_learned_positional_embeddings=True), vae={})
    return _tiny_target(pipe, device, dtype, name="tiny-cogvideox")


def tiny_cogvideox15(device="cpu", dtype=torch.float32, seed: int = 0) -> CogVideoXTarget:
    """`tiny_cogvideox` with what CogVideoX1.5-5B-I2V's configs change: latent frames patched in pairs
    (patch_size_t 2: 17 frames -> 5 latent frames, which the pipeline pads to 6 with a leading frame),
    no bias in the patch embedding, an ofs embedding (its width is the time embedding's, to which it is
    added), rotary positions only (any 1 + 4k frames), and a VAE with invert_scale_latents (image latents
    divided by its scaling factor, 0.7 as in 1.5). Working size 64 x 96 given explicitly, as 1.5's
    config names no single size."""
    pipe = _tiny_pipeline(seed, transformer=dict(patch_size_t=2, patch_bias=False, ofs_embed_dim=8,
                                                 use_learned_positional_embeddings=False),
                          vae=dict(invert_scale_latents=True, scaling_factor=0.7))
    return _tiny_target(pipe, device, dtype, name="tiny-cogvideox15", height=64, width=96)


def _tiny_pipeline(seed: int, transformer: dict, vae: dict) -> CogVideoXImageToVideoPipeline:
    """The tiny I2V pipeline, float32 on the CPU; `transformer` and `vae`: config entries that differ
    between the tiny builders."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        # attention_head_dim must be divisible by 16 for the 3D RoPE; heads * head_dim = text_embed_dim
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=8,
        text_embed_dim=32, num_layers=2,
        sample_width=12, sample_height=8,  # latents: 96 / 8, 64 / 8
        sample_frames=17,  # latent frames: (17 - 1) / 4 + 1 = 5 (odd, as the VAE decoder needs: 49 -> 13)
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
        use_rotary_positional_embeddings=True, **transformer,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4, **vae,
    )
    scheduler = _scheduler()
    words = sorted({w.strip(".,").lower() for w in DEFAULT_PROMPT.split()} | {"a", "the", "camera", "moves"})
    tokenizer = _tiny_tokenizer(words)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1,
    ))
    pipe = CogVideoXImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                         transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler() -> CogVideoXDDIMScheduler:
    """CogVideoX-5b-I2V's scheduler_config.json."""
    return CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
        set_alpha_to_one=True, snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing",
    )


def _tiny_target(pipe: CogVideoXImageToVideoPipeline, device, dtype, **kwargs) -> CogVideoXTarget:
    # built in float32; cast only when asked (a cast to float32 makes diffusers log a warning)
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    return CogVideoXTarget(pipe, num_inference_steps=3, **kwargs)


def random_cogvideox(device="cpu", dtype=torch.float32) -> CogVideoXTarget:
    """Full-size CogVideoX-5b-I2V with random weights, built without a hub (GPU benchmarks: time and memory
    depend on shapes, not weights): 49 frames at 480 x 720, 50 steps. Transformer (42 layers, 48 heads x
    64, learned positional embeddings for 49 frames, 5.57B parameters) and VAE configs of THUDM/CogVideoX-5b-I2V,
    its scheduler (`_scheduler`). The T5-XXL text encoder runs once, at load (then it is dropped): a
    1-layer stand-in with the real 4096-wide output keeps the transformer's inputs real-shaped. Each module
    is built on `device` in float32, then cast to `dtype`."""
    from transformers import T5Config, T5EncoderModel

    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=48, attention_head_dim=64, in_channels=32, out_channels=16, num_layers=42,
            text_embed_dim=4096, time_embed_dim=512, sample_frames=49, sample_height=60, sample_width=90,
            use_learned_positional_embeddings=True, use_rotary_positional_embeddings=True).to(dtype)
        vae = AutoencoderKLCogVideoX(latent_channels=16, scaling_factor=0.7).to(dtype)
        tokenizer = _tiny_tokenizer(sorted({w.strip(".,").lower() for w in DEFAULT_PROMPT.split()}))
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=4096, d_kv=8, d_ff=64,
                                               num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                                               feed_forward_proj="gated-gelu")).to(dtype)
    pipe = CogVideoXImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                         transformer=transformer, scheduler=_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return CogVideoXTarget(pipe.to(device), name="random-cogvideox")
