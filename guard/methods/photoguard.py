"""PhotoGuard's encoder attack (Salman et al., 2023): pull the VAE latent of the image toward the
latent of a target image. The standard cheap baseline: no denoiser call, so a step costs one VAE
encoder pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, target_image


@dataclass
class PhotoGuard(Method):
    name = "photoguard"
    target: str = "gray"  # image whose latent we pull toward: "gray" or "pattern" (see target_image)

    def setup(self, target, x, generator):
        with torch.no_grad():
            self.z_target = target.image_latents(target_image(self.target, x))
            # normaliser: the loss is 1 at the clean image, 0 at the target latent
            self.scale = (target.image_latents(x) - self.z_target).pow(2).mean().clamp_min(1e-12)

    def loss(self, target, x_adv, generator):
        enc = (target.image_latents(x_adv) - self.z_target).pow(2).mean() / self.scale
        return {"loss": enc, "enc": enc}
