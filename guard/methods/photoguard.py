"""PhotoGuard's encoder attack (Salman et al., 2023): pull the VAE latent of the image toward the
latent of another image (`pull_toward`: mid-gray by default). The standard cheap baseline: no
denoiser call, so a step costs one VAE encoder pass.

Where this differs from PhotoGuard's released encoder attack (`pgd` in its demo notebook), so that
every method here shares one loop and one stated budget:
- step size: PhotoGuard decays its step linearly from `step_size` to `step_size / 100` over the
  iterations; the shared PGD loop (`guard.optimize`) keeps a constant step, 2.5 eps / steps by default;
- loss: PhotoGuard minimises the L2 norm of the latent mean's difference from its target's; this is
  its square averaged over elements and divided by its value at the clean image (the same gradient
  direction, hence the same sign step);
- budget and steps: PhotoGuard's demo uses eps 0.06 in [-1, 1] units (7.65/255) and 1000 steps;
  here eps is given in [0, 1] units and the presets take 50 (fast) or 200 (reference) steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, pull_toward_image


@dataclass
class PhotoGuard(Method):
    name = "photoguard"
    pull_toward: str = "gray"  # image whose latent we pull toward: "gray" or "pattern" (see pull_toward_image)

    def setup(self, target, x, generator):
        with torch.no_grad():
            self.z_toward = target.image_latents(pull_toward_image(self.pull_toward, x))
            # normaliser: the loss is 1 at the clean image, 0 at the latent pulled toward
            self.scale = (target.image_latents(x) - self.z_toward).pow(2).mean().clamp_min(1e-12)

    def loss(self, target, x_adv, generator, transform=None):
        x_in = x_adv if transform is None else transform(x_adv)  # the latent pulled toward is kept
        enc = (target.image_latents(x_in) - self.z_toward).pow(2).mean() / self.scale
        return {"loss": enc, "enc": enc}
