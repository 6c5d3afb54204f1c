"""The embedded I2V model: a small Stable Video Diffusion, built from one config.

Every component is a stock diffusers / transformers class, so the saved folder loads with
`StableVideoDiffusionPipeline.from_pretrained(...)` and every attack written for SVD runs on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection


DEFAULT_STEPS = 12  # Euler steps for CPU generation (the pipeline's own default is 25); see the model card
GUIDANCE = 1.0  # classifier-free guidance at generation, every frame: none (see the model card for the measurement)


@dataclass
class ModelConfig:
    height: int = 192  # pixels; the pipeline must be called with this height and width
    width: int = 256  # 4:3, the commonest photo aspect; guard center-crops to it
    num_frames: int = 8  # default video length (unet.config.num_frames); trained on 8 to 14
    train_frames: tuple = (8, 11, 14)  # clip lengths drawn per training step
    latent_channels: int = 16  # SVD has 4; 16 (as SD3/Flux VAEs) keeps frames sharp at 8x downsampling
    vae_channels: tuple = (32, 64, 128, 128)  # one 2x downsample per extra level: 8x, as SVD;
    # 32 at full resolution keeps the CPU decode cheap (GroupNorm needs multiples of 32)
    vae_layers: int = 1  # resnets per VAE level
    unet_channels: tuple = (96, 128, 192)  # per UNet level; latents 24x32 -> 12x16 -> 6x8
    unet_layers: int = 1  # resnets (and spatio-temporal transformers) per UNet level
    unet_heads: tuple = (3, 4, 6)  # attention heads per level (head dim 32), spatial and temporal alike
    unet_transformer_layers: int = 1  # spatial+temporal transformer pairs per attention layer
    unet_attention_levels: tuple = (0, 1, 1)  # 1 = CrossAttn block at that level (as SVD: not at the top)
    clip_hidden: int = 96  # the image encoder: a small ViT on 224x224, patch 32 (7x7 tokens)
    clip_layers: int = 3
    clip_heads: int = 4
    clip_projection: int = 64  # = UNet cross_attention_dim: the image embedding's size
    time_embed_dim: int = 32  # per added time id (fps-1, motion_bucket_id, noise_aug_strength)

    def to_dict(self) -> dict:
        return asdict(self)


def build_vae(cfg: ModelConfig) -> AutoencoderKLTemporalDecoder:
    n = len(cfg.vae_channels)
    return AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers,
        latent_channels=cfg.latent_channels,
        sample_size=cfg.height,
        scaling_factor=1.0,  # replaced after training by 1/std of the latents, as SD/SVD did
        force_upcast=False,
    )


@torch.no_grad()
def grow_vae_state(vae: AutoencoderKLTemporalDecoder, state: dict, generator: torch.Generator | None = None) -> dict:
    """A narrower VAE's state grown to `vae`'s shapes without changing what it computes (Net2Net), so
    that a wider decoder can be trained on from a trained one while the encoder, and so the latent
    space a trained UNet works in, stays exactly as it was.

    - A level twice as wide: every channel is duplicated in place (c -> 2c, 2c+1), so GroupNorm's 32
      groups hold the same values twice (same statistics); a layer reading duplicated channels splits
      each old weight between the two copies at a random ratio (w(1/2 + d), w(1/2 - d)), which sums to
      the old weight and gives the copies different gradients, so they can learn different things.
      The mid-block attention's head dimension doubles with its width: its queries are scaled by
      1/sqrt(2) to keep the softmax's logits.
    - A level with more resnets: the added resnets (last in their block) get a zero second
      convolution, so they start as the identity (spatial and temporal branches alike). The decoder's
      mid-block attention, which diffusers runs only between two resnets, starts with a zero output.
    - A resnet that now changes the width gains a 1x1 shortcut that copies each channel twice (or
      averages the two copies), the identity on what the small one computed.
    """
    new = vae.state_dict()
    assert set(state) <= set(new), f"not a smaller VAE of the same kind: {sorted(set(state) - set(new))[:3]}"
    out = {}
    for k, ref in new.items():
        if k not in state:
            assert ".resnets." in k, f"{k}: only resnets can be added"
            if ".conv_shortcut." in k:  # a resnet whose input and output widths now differ: the shortcut
                out[k] = torch.zeros_like(ref)  # copies each channel twice, or averages each pair of copies
                if k.endswith("weight"):
                    n_out, n_in = ref.shape[:2]
                    if n_out > n_in:
                        out[k][torch.arange(n_out), torch.arange(n_out) // 2] = 1.0
                    else:
                        out[k][torch.arange(n_in) // 2, torch.arange(n_in)] = 0.5
            else:
                out[k] = torch.zeros_like(ref) if ".conv2." in k else ref.clone()
            continue
        w = state[k].to(ref.device, ref.dtype)
        for d in range(w.dim()):
            if w.shape[d] == ref.shape[d]:
                continue
            assert ref.shape[d] == 2 * w.shape[d], f"{k}: dim {d} grows {w.shape[d]} -> {ref.shape[d]}, not 2x"
            if d == 1:  # input channels: the two copies share the old weight
                split = 0.25 * (2 * torch.rand(w.shape, generator=generator) - 1).to(w)
                w = torch.stack([w * (0.5 + split), w * (0.5 - split)], d + 1).flatten(d, d + 1)
            else:  # output channels (and 1-d parameters: biases, norms): copies
                w = w.repeat_interleave(2, dim=d)
        if (".to_q." in k) and w.shape[0] != state[k].shape[0]:
            w = w / 2**0.5
        out[k] = w
    if "decoder.mid_block.resnets.1.spatial_res_block.conv1.weight" not in state:  # the decoder's mid-block attention
        for k in out:  # runs only between two resnets: it was never used, and joins as the identity (a residual)
            if k.startswith("decoder.mid_block.attentions.0.to_out."):
                out[k] = torch.zeros_like(out[k])
    return out


def build_unet(cfg: ModelConfig) -> UNetSpatioTemporalConditionModel:
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in cfg.unet_attention_levels)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(cfg.unet_attention_levels))
    vae_factor = 2 ** (len(cfg.vae_channels) - 1)
    return UNetSpatioTemporalConditionModel(
        sample_size=cfg.height // vae_factor,
        in_channels=2 * cfg.latent_channels,  # noisy latents + first-frame latents
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        addition_time_embed_dim=cfg.time_embed_dim,
        projection_class_embeddings_input_dim=3 * cfg.time_embed_dim,
        layers_per_block=cfg.unet_layers,
        cross_attention_dim=cfg.clip_projection,
        transformer_layers_per_block=cfg.unet_transformer_layers,
        num_attention_heads=tuple(cfg.unet_heads),
        num_frames=cfg.num_frames,
    )


def build_image_encoder(cfg: ModelConfig) -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            image_size=224,
            patch_size=32,
            hidden_size=cfg.clip_hidden,
            intermediate_size=4 * cfg.clip_hidden,
            num_hidden_layers=cfg.clip_layers,
            num_attention_heads=cfg.clip_heads,
            projection_dim=cfg.clip_projection,
        )
    )


def build_scheduler() -> EulerDiscreteScheduler:
    # SVD's scheduler config: EDM (Karras) sigmas in [0.002, 700], v-prediction, continuous timesteps.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_type="continuous",
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_feature_extractor() -> CLIPImageProcessor:
    # OpenAI CLIP mean/std, as SVD's feature_extractor; the pipeline resizes to 224 itself.
    return CLIPImageProcessor(
        crop_size={"height": 224, "width": 224},
        size={"shortest_edge": 224},
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        do_rescale=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
