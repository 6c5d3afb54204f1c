"""Vid-Freeze (arXiv 2509.23279): suppress attention so that no motion is synthesised.

Loss (from the paper's equations as we read them): the mean squared Frobenius norm of the attention
maps, (1/L) sum_l ||A_l||_F^2, minimised under an L-inf budget, with the diffusion timestep resampled
at every PGD step. For a softmax row the squared norm is smallest when the row is uniform: every
frame then attends equally to every frame, every frame receives the same mixture, and the video
freezes.

Which attention layers, per model family (what `target.capture_attention()` records):
- SVD (and the embedded model): the temporal self-attention layers of the UNet,
  `temporal_transformer_blocks[*].attn1`, the only place where frames exchange information
  through attention. Spatial attention does not mix frames, so suppressing it cannot stop motion.
- CogVideoX: full 3D attention mixes frames inside every transformer block; the target summarises
  each layer by a frame-to-frame map (attention mass from the queries of frame i to the keys of
  frame j), so every layer is targeted, or with `layers=k` the first k blocks only.

Choices the paper leaves open, made here: the noisy latents are those of a static video of the
clean image (no generation needed: Vid-Freeze needs attention maps, not a reference video); the
timestep is drawn uniformly over the fraction `t_range` of the sampling schedule; one noise draw per
step; the denoiser is called once per step without classifier-free guidance, and its forward stops
after the last attention layer read (the loss never reads the output).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, attention_energy, static_video_latents


@dataclass
class VidFreeze(Method):
    name = "vidfreeze"
    t_range: tuple[float, float] = (0.0, 1.0)  # fraction of the schedule to draw levels from, in [0, 1] (1 = noisiest)
    frames: int | None = None  # frames during the attack, >= 2 (None: the model's default)
    layers: int | None = None  # attention layers read, >= 1, the first ones in forward order (None: all)

    def setup(self, target, x, generator):
        self.x = x
        self.reference = static_video_latents(target, x, self.frames or target.num_frames)

    def loss(self, target, x_adv, generator, transform=None):
        reference = self.reference
        if transform is not None:  # the video the model animates is the transformed photo's
            x_adv = transform(x_adv)
            reference = static_video_latents(target, transform(self.x), self.frames or target.num_frames)
        level = target.sample_noise_level(x_adv.shape[0], generator, *self.t_range)
        noise = torch.randn(reference.shape, generator=generator, device=reference.device, dtype=reference.dtype)
        noisy = target.add_noise(reference, noise, level)
        cond = target.condition(x_adv, generator)
        with target.capture_attention(self.layers) as maps:
            target.denoise(noisy, level, cond, maps_only=True)
        energy = attention_energy(maps)
        return {"loss": energy, "attn_energy": energy}


@torch.no_grad()
def attention_at_draws(target, x: torch.Tensor, seeds=range(4)) -> tuple[list[float], list[tuple]]:
    """Vid-Freeze's measure at fixed draws, for checks and benchmarks: for each seed, the attention
    energy of the denoiser on the static video of `x` noised at a level and a noise drawn from
    `torch.Generator(target.device).manual_seed(seed)` (conditioned with the same generator). Returns
    the energies and, per seed, the (noisy, level, maps) they were read from, so that another image's
    maps can be compared at the same draws."""
    reference = static_video_latents(target, x, target.num_frames)
    energies, draws = [], []
    for seed in seeds:
        g = torch.Generator(target.device).manual_seed(seed)
        level = target.sample_noise_level(1, g)
        noisy = target.add_noise(reference, torch.randn(reference.shape, generator=g, device=x.device), level)
        with target.capture_attention() as maps:
            target.denoise(noisy, level, target.condition(x, g))
        energies.append(float(attention_energy(maps)))
        draws.append((noisy, level, maps))
    return energies, draws
