"""Freeze: make the denoiser predict a still video of the photo, at the noise levels where motion is decided.

Neither paper method; guard's own, from the leads the literature reports (BadWorld's Drift-Min pulls
the predicted velocity toward a static reference; MEDUSA and BadWorld attack the early, high-noise
timesteps, where an I2V sampler lays out the motion; DiffusionGuard attacks the earliest step).

    Z = E(I_src) repeated over F frames              # the still video of the clean photo, in latent space
    each step: sigma ~ the noisiest fraction `t_range` of the sampling schedule, n ~ N(0, I)
        X0hat = G(Z + sigma n, sigma | I_adv)        # the denoiser's predicted clean video
        L_still = mean_t ||X0hat_t - Z_t||^2  /  (its value at the clean photo, same draws)

Why it freezes: at high noise the noisy input carries almost nothing of Z, so X0hat is what the
conditioning (the guarded photo's CLIP embedding and VAE latent, the motion bucket) says the video
will be; driving it to the still video makes the first sampler steps, which fix the motion, lay out
none. Unlike Vid-Freeze it does not assume motion is carried by temporal attention: it reads the
denoiser's output, whatever layers carry the motion.

Choices, each a parameter: noise levels drawn uniformly over the top fraction `t_range` of the
Karras ramp (0.5-1.0 by default; 1 = noisiest); `noise_draws` draws fixed at setup and cycled (their
clean-photo normaliser computed once), or None for a fresh draw every step; the motion bucket drawn
per step from `buckets` so that the protection holds at buckets it was not run at (handed to the
target as `motion_bucket_id`; a family conditioned on no motion bucket, CogVideoX, ignores it);
`frames` during the attack (fewer than the video's is cheaper; SVD's temporal position embedding of
the first frames is the same at any length); no classifier-free guidance in the attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, static_video_latents


@dataclass
class Freeze(Method):
    name = "freeze"
    t_range: tuple[float, float] = (0.5, 1.0)  # fraction of the schedule to draw levels from, in [0, 1] (1 = noisiest)
    frames: int | None = None  # frames during the attack, >= 2 (None: the model's default)
    noise_draws: int | None = 4  # draws fixed at setup and cycled, >= 1; None: a fresh draw every step
    buckets: tuple[int, int] | None = (64, 255)  # motion_bucket_id range drawn per step, in 0..255 (None: the model's)

    def setup(self, target, x, generator):
        self.x = x
        self.still = static_video_latents(target, x, self.frames or target.num_frames)
        self.draws = []
        for _ in range(self.noise_draws or 0):
            level = target.sample_noise_level(x.shape[0], generator, *self.t_range)
            noise = torch.randn(self.still.shape, generator=generator, device=self.still.device, dtype=self.still.dtype)
            self.draws.append((level, noise))
        self.step = 0
        with torch.no_grad():  # the clean photo's distance, per fixed draw: the loss starts at 1
            self.scale = [float(self._distance(target, x, level, noise, generator, self.still))
                          for level, noise in self.draws] or [1.0]

    def _distance(self, target, x, level, noise, generator, still):
        """Mean squared distance of the denoiser's predicted clean video to `still`, conditioned on x
        (and on a motion bucket drawn from `buckets`) at the noise level and noise given."""
        bucket = None
        if self.buckets is not None:
            lo, hi = self.buckets
            bucket = int(torch.randint(lo, hi + 1, (1,), generator=generator, device=generator.device))
        cond = target.condition(x, generator, **({} if bucket is None else {"motion_bucket_id": bucket}))
        _, x0 = target.denoise(target.add_noise(still, noise, level), level, cond)
        return (x0 - still.float()).square().mean()

    def loss(self, target, x_adv, generator, transform=None):
        still = self.still
        if transform is not None:  # the video the model animates is the transformed photo's
            x_adv = transform(x_adv)
            still = static_video_latents(target, transform(self.x), self.frames or target.num_frames)
        if self.draws:
            i = self.step % len(self.draws)
            level, noise = self.draws[i]
            scale = self.scale[i]
        else:
            level = target.sample_noise_level(x_adv.shape[0], generator, *self.t_range)
            noise = torch.randn(still.shape, generator=generator, device=still.device, dtype=still.dtype)
            scale = 1.0
        self.step += 1
        distance = self._distance(target, x_adv, level, noise, generator, still)
        return {"loss": distance / scale, "still_distance": distance}
