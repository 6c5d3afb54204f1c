"""Stable Video Diffusion (SVD, SVD-XT, and the embedded model, which has SVD's architecture).

The diffusers pipeline (`StableVideoDiffusionPipeline`) runs under `torch.no_grad()`, so an attack
calls the components itself. Everything below mirrors
`diffusers/pipelines/stable_video_diffusion/pipeline_stable_video_diffusion.py` step by step, written
so gradients flow from every exposed quantity back to the image.

The pipeline reads the photo twice: its CLIP branch (`_encode_image`) resizes the photo as given to
224 x 224, its VAE branch encodes the photo resized to the working size. So does `condition`: CLIP from
`photo_of(image)` (the full-size photo a working-size image is marked with, `with_photo`), the VAE
latent from the working-size image itself.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.utils.checkpoint
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from .base import AttentionStore, Target, Video, normalize_to_neg_one_to_one, photo_of


class TemporalAttentionRecorder(AttnProcessor2_0):
    """Processor for SVD's temporal self-attention (`temporal_transformer_blocks[*].attn1`).

    Outside `capture_attention` it is the stock SDPA processor. Inside, it computes
    softmax(QK^T / sqrt(d)) explicitly (so the probabilities exist, with gradients) and stores them:
    (B*H*W*heads, F, F), one row per query frame. Only temporal maps are ever materialised: they are
    F x F per spatial position, while a spatial map at 576x1024 would be ~21 GB per layer.

    Maps are stored in forward only (`AttentionStore.add`), so a checkpointed block that recomputes
    this layer during backward does not record it twice.
    """

    def __init__(self, store: AttentionStore):
        super().__init__()
        self.store = store

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        # The explicit path runs whenever gradients are on, recording or not, so that a checkpointed
        # block recomputes in backward exactly the operations of its forward.
        if not (self.store.enabled or torch.is_grad_enabled()):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        # temporal self-attention: hidden_states (B*H*W, F, C), no mask, no group/spatial norm in SVD
        assert encoder_hidden_states is None and attention_mask is None, "temporal attn1 is self-attention"
        residual = hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*H*W*heads, F, d)
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        probs = attn.get_attention_scores(query, key, None)  # (B*H*W*heads, F, F), rows sum to 1
        self.store.add(probs)  # may raise StopForward (denoise with maps_only)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def checkpoint_when_training(module: torch.nn.Module) -> None:
    """Recompute `module` in backward instead of storing its activations (only when grad is on)."""
    forward = module.forward

    def checkpointed(*args, **kwargs):
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    module.forward = checkpointed


def is_temporal_self_attention(processor_name: str) -> bool:
    return "temporal_transformer_blocks" in processor_name and ".attn1." in processor_name


class SVDTarget(Target):
    family = "svd"
    # the pipeline's micro-conditioning (added_time_ids), which the attack conditions on alike
    condition_options = ("fps", "motion_bucket_id", "noise_aug_strength")
    generate_options = (*condition_options, "decode_chunk_size", "min_guidance_scale", "max_guidance_scale")
    attention_layers = (
        "temporal self-attention of the UNet (temporal_transformer_blocks[*].attn1): at each spatial "
        "position, each frame attends over all frames; maps (B*H*W*heads, F, F)"
    )

    def __init__(self, pipe: StableVideoDiffusionPipeline, name: str = "svd", fps: int = 7,
                 motion_bucket_id: int = 127, noise_aug_strength: float = 0.02,
                 num_inference_steps: int = 25, checkpointing: bool | None = None,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 min_guidance_scale: float = 1.0, max_guidance_scale: float = 3.0):
        super().__init__()
        self.pipe, self.name = pipe, name
        self.unet, self.vae, self.image_encoder = pipe.unet, pipe.vae, pipe.image_encoder
        self.denoiser = self.unet
        for module in (self.unet, self.vae, self.image_encoder):
            module.requires_grad_(False).eval()
        self.device, self.dtype = self.unet.device, self.unet.dtype
        # A float16 VAE with force_upcast encodes in float32 in the pipeline (its `needs_upcasting`);
        # the attack's encoder paths do the same, on a float32 copy (the pipeline's module stays as is).
        self.encoder_vae = self.vae
        if self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
            self.encoder_vae = copy.deepcopy(self.vae).to(torch.float32)
        # Real SVD checkpoints (UNet sample_size 96) run at the pipeline's 576 x 1024; a smaller model
        # (the embedded one, the tiny one) at its own square size.
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.height, self.width = (576, 1024) if pipe.unet.config.sample_size == 96 else (side, side)
        self.height, self.width = height or self.height, width or self.width
        self.num_frames = num_frames or pipe.unet.config.num_frames
        self.num_inference_steps = num_inference_steps
        self.fps, self.motion_bucket_id, self.noise_aug_strength = fps, motion_bucket_id, noise_aug_strength
        # Classifier-free guidance at generation, rising linearly over the frames (the pipeline's own
        # 1 -> 3 by default); a model may ship its own (the embedded one: 1 -> 1, no guidance).
        self.guidance = {"min_guidance_scale": min_guidance_scale, "max_guidance_scale": max_guidance_scale}
        # Record only temporal self-attention; every other layer keeps its processor.
        processors = self.unet.attn_processors
        for key in processors:
            if is_temporal_self_attention(key):
                processors[key] = TemporalAttentionRecorder(self.attention_store)
                self.num_attention_layers += 1
        self.unet.set_attn_processor(processors)
        # Activation checkpointing of every spatio-temporal resnet and transformer (diffusers' own
        # gradient checkpointing skips the temporal blocks): an attack step on SVD-XT then fits a
        # ZeroGPU slice. Default: on for CUDA, off on CPU where memory is not the limit.
        if checkpointing is None:
            checkpointing = self.device.type == "cuda"
        if checkpointing:
            from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
            from diffusers.models.resnet import SpatioTemporalResBlock

            for module in self.unet.modules():
                if isinstance(module, (TransformerSpatioTemporalModel, SpatioTemporalResBlock)):
                    checkpoint_when_training(module)
        self.checkpointing = checkpointing

    @classmethod
    def from_pretrained(cls, path_or_id: str, device="cpu", dtype=torch.float32, **kwargs) -> "SVDTarget":
        pipe = StableVideoDiffusionPipeline.from_pretrained(path_or_id, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), **kwargs)

    # -- image side -------------------------------------------------------------------------------
    def image_embeddings(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP image embedding (B, 1, D) of `photo_of(image)` (the photo as the pipeline is handed it,
        any size, in [0, 1]), as `_encode_image` computes it, with gradients.

        The pipeline goes through numpy and `CLIPImageProcessor`, which cuts gradients; this is the
        same arithmetic in torch: antialiased resize of the photo to 224 in [-1, 1], back to [0, 1],
        CLIP mean/std."""
        x = normalize_to_neg_one_to_one(photo_of(image).float())
        x = (_resize_with_antialiasing(x, (224, 224)) + 1.0) / 2.0
        mean = torch.tensor(self.pipe.feature_extractor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.pipe.feature_extractor.image_std, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.image_encoder.dtype)
        return self.image_encoder(x).image_embeds.unsqueeze(1)

    def image_latents(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`vae.encode(2x-1 + noise).latent_dist.mode()`, NOT scaled by the scaling factor, exactly as
        the pipeline conditions on it (`_encode_vae_image`). (B, C, H/f, W/f), C = the VAE's
        latent_channels, f = its downsampling factor."""
        x = normalize_to_neg_one_to_one(image)
        if noise is not None:
            x = x + noise
        return self.encoder_vae.encode(x.to(self.encoder_vae.dtype)).latent_dist.mode()

    def _condition(self, image, generator, fps=None, motion_bucket_id=None, noise_aug_strength=None) -> dict:
        """Entries "image_embeddings" (B, 1, D); "image_latents" (B, C, h, w) of the image plus the
        pipeline's noise augmentation (drawn first from `generator`, as the pipeline draws it);
        "added_time_ids" (B, 3). Options None: the target's defaults."""
        fps = self.fps if fps is None else fps
        bucket = self.motion_bucket_id if motion_bucket_id is None else motion_bucket_id
        aug = self.noise_aug_strength if noise_aug_strength is None else noise_aug_strength
        noise = None
        if aug > 0:
            noise = aug * torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
        # SVD was conditioned on fps - 1 (see the pipeline)
        time_ids = torch.tensor([[fps - 1, bucket, aug]], device=self.device, dtype=self.dtype)
        return {
            "image_embeddings": self.image_embeddings(image),
            "image_latents": self.image_latents(image, noise),
            "added_time_ids": time_ids.repeat(image.shape[0], 1),
        }

    # -- video side -------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        x = normalize_to_neg_one_to_one(frames.flatten(0, 1)).to(self.encoder_vae.dtype)
        latents = self.encoder_vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.unflatten(0, (b, f)).to(self.dtype)  # (B, F, C, h, w)

    def _sigma_range(self) -> tuple[float, float]:
        config = self.pipe.scheduler.config
        sigmas = self.pipe.scheduler.sigmas
        smin = config.sigma_min if config.get("sigma_min") is not None else float(sigmas[sigmas > 0].min())
        smax = config.sigma_max if config.get("sigma_max") is not None else float(sigmas.max())
        return smin, smax

    def _sample_noise_level(self, batch_size, generator, low, high):
        """Sigmas on the Karras (rho = 7) ramp the SVD scheduler samples with, at a uniform fraction."""
        smin, smax = self._sigma_range()
        device = generator.device if generator is not None else self.device
        u = low + (high - low) * torch.rand(batch_size, generator=generator, device=device)
        rho = 7.0
        sigma = (smin ** (1 / rho) + u * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho
        return sigma.to(self.device)

    def noise_levels(self, num_inference_steps=None):
        """The sigmas of the pipeline's steps (the last one, 0, is where it ends, not a step)."""
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps, device=self.device)
        return scheduler.sigmas[:-1]

    def add_noise(self, latents, noise, level):
        return latents + noise * level.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)

    def denoise(self, noisy_latents, level, cond, maps_only=False):
        """EDM preconditioning of SVD's Euler scheduler (v-prediction):
        input scaled by 1/sqrt(sigma^2+1), timestep 0.25*log(sigma),
        x0 = out * (-sigma/sqrt(sigma^2+1)) + x/(sigma^2+1), in float32 as the scheduler's step upcasts."""
        sigma = level.float().view(-1, 1, 1, 1, 1)
        f = noisy_latents.shape[1]
        model_input = (noisy_latents.float() / (sigma**2 + 1).sqrt()).to(self.dtype)
        image_latents = cond["image_latents"].to(self.dtype).unsqueeze(1).repeat(1, f, 1, 1, 1)
        model_input = torch.cat([model_input, image_latents], dim=2)
        out = self._run_denoiser(lambda: self.unet(
            model_input, 0.25 * level.float().log(), encoder_hidden_states=cond["image_embeddings"],
            added_time_ids=cond["added_time_ids"], return_dict=False)[0], maps_only)
        if out is None:
            return None, None
        out = out.float()
        x0 = out * (-sigma / (sigma**2 + 1).sqrt()) + noisy_latents.float() / (sigma**2 + 1)
        return out, x0

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, image, seed, num_frames, num_inference_steps, return_latents, callback, fps=None,
                  motion_bucket_id=None, noise_aug_strength=None, decode_chunk_size=8, min_guidance_scale=None,
                  max_guidance_scale=None):
        """Options None: the target's defaults (guidance: `self.guidance`); decode_chunk_size: frames
        the VAE decodes at once."""
        num_frames = num_frames or self.num_frames
        steps = num_inference_steps or self.num_inference_steps
        fps = self.fps if fps is None else fps
        bucket = self.motion_bucket_id if motion_bucket_id is None else motion_bucket_id
        aug = self.noise_aug_strength if noise_aug_strength is None else noise_aug_strength
        low = self.guidance["min_guidance_scale"] if min_guidance_scale is None else min_guidance_scale
        high = self.guidance["max_guidance_scale"] if max_guidance_scale is None else max_guidance_scale
        image = image.convert("RGB")  # any size: the pipeline resizes it (Target.generate)

        generator = torch.Generator(self.device).manual_seed(seed)
        latents = self.pipe(image, height=self.height, width=self.width, num_frames=num_frames,
                            num_inference_steps=steps, fps=fps, motion_bucket_id=bucket,
                            noise_aug_strength=aug, decode_chunk_size=decode_chunk_size, generator=generator,
                            min_guidance_scale=low, max_guidance_scale=high, output_type="latent",
                            callback_on_step_end=self.step_callback(callback, steps)).frames
        # decode exactly as the pipeline does for output_type="np"
        video = self.pipe.decode_latents(latents, num_frames, decode_chunk_size)  # (B, C, F, H, W) in [-1, 1]
        frames = self.pipe.video_processor.postprocess_video(video=video, output_type="np")[0]  # (F, H, W, 3)
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
        settings = dict(model=self.name, seed=seed, num_frames=num_frames, num_inference_steps=steps,
                        fps=fps, motion_bucket_id=bucket, noise_aug_strength=aug,
                        guidance=[low, high])
        return Video(frames=frames, latents=latents if return_latents else None, settings=settings)


def tiny_svd(device="cpu", dtype=torch.float32, seed: int = 0, **kwargs) -> SVDTarget:
    """A random-weight SVD small enough for CPU tests, built offline (configs as in diffusers' own
    fast tests, with a 224 / patch 32 CLIP so that the pipeline's 224 resize is valid). 32 x 32, 4 frames."""
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32, num_attention_heads=8, projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32, num_frames=4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", trained_betas=None,
        use_karras_sigmas=True,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"], latent_channels=4,
    )
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224,
        intermediate_size=37, patch_size=32,
    ))
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    pipe = StableVideoDiffusionPipeline(unet=unet, vae=vae, image_encoder=image_encoder, scheduler=scheduler,
                                        feature_extractor=feature_extractor)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    return SVDTarget(pipe, **{"name": "tiny-svd", "num_inference_steps": 3, **kwargs})


def random_svd_xt(device="cpu", dtype=torch.float32) -> SVDTarget:
    """Full-size SVD-XT with random weights, built without a hub (GPU benchmarks: time and memory depend
    on shapes, not weights): 25 frames at 576 x 1024, 25 steps. Configs of
    stabilityai/stable-video-diffusion-img2vid-xt: the UNet's are diffusers' defaults of
    `UNetSpatioTemporalConditionModel` (1.52B parameters) with 25 frames; the temporal-decoder VAE's
    and the CLIP ViT-H/14 image encoder's (32 layers, 1280 wide, 1024-d projection) as in its folders.
    Each module is built on `device` in float32, then cast to `dtype`."""
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(sample_size=96, num_frames=25).to(dtype)
        vae = AutoencoderKLTemporalDecoder(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                           latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 4).to(dtype)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
            patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")).to(dtype)
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=CLIPImageProcessor(crop_size=224, size=224))
    pipe.set_progress_bar_config(disable=True)
    # .to: modules that make buffers with the legacy torch.Tensor() constructor ignore torch.device
    return SVDTarget(pipe.to(device), name="random-svd-xt")
