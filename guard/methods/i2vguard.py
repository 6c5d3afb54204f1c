"""I2VGuard (Gui et al., CVPR 2025): spatial, temporal and diffusion attacks, as in its Algorithm 1.

    x_src, x_tg = E(I_src), E(I_tg)               # VAE latents of the image and of the image pulled toward
    V0 = P(I_src);  X0, X_tg = E(V0), E(V_tg)      # clean video and video pulled toward, in latents
    each step:  X_t = S(X0)                        # noise the clean video at a random level
        L_enc = ||E(I_adv) - x_tg||^2                                      # spatial attack
        X0hat = G(X_t, E(I_adv));  L_con = ||X0hat - X_tg||^2 + max(0, tau1 - ||X0hat - X0||^2)
        L_att = max(0, tau2 - ||A_adv - A_src||^2)                         # temporal attack
        L = ||I_adv - I_src||^2 + alpha L_enc + beta L_con + gamma L_att

Choices the paper leaves open, made here (each one is a parameter):
- Optimiser: the paper updates I_adv by plain gradient steps with rate lambda; we use the shared L-inf
  PGD loop (sign steps, projection onto the eps-ball) so every method has the same, stated budget.
  The ||I_adv - I_src||^2 term is kept with weight `lam_image` although the projection already bounds it.
- Norms are means over elements, and L_enc and the pull-toward part of L_con are divided by their value
  at the clean image, so each starts at 1 and weights of 1 balance the terms whatever the model size.
  The hinge thresholds are absolute: tau1 in latent mean-square units (the latents have unit
  variance), tau2 in mean squared row distance of the F x F temporal maps (0 = equal, 2 = disjoint).
- L_enc is taken on the latent the pipeline conditions on: for SVD that is E(I_adv + 0.02 n), with
  SVD's noise augmentation (a fresh n from the protection's generator every step), not the paper's
  E(I_adv); CogVideoX has no augmentation. Its normaliser is measured without noise.
- L_att: the poster writes tau2 - ||A_adv - A_src||^2 without a hinge; we hinge it (max(0, .)) so
  the maps are pushed *at least* tau2 away and the term stops pulling once they are.
- X0 are the latents the pipeline itself produced for V0 (what E(V0) approximates, without the
  VAE's round trip); V_tg is a static video of the image pulled toward, I_tg (`pull_toward`: mid-gray
  by default).
- V0 is generated with the protection's own seed (`PGDConfig.seed`), never with the seed of a video
  the protection is judged on (`guard evaluate` refuses overlapping seeds).
- A_src are the temporal maps of the clean image at the same X_t (no gradient).
- Noise levels: drawn uniformly over the fraction `t_range` of the sampling schedule, resampled
  every step (or, with `noise_draws=K`, K draws fixed at setup and cycled, so that A_src is computed
  once per draw: the fast preset's saving); no classifier-free guidance in the attack.
- Robust mode: with a step's transformation t, the clean references are recomputed under t: X0 from
  t applied to V0's frames (re-encoded), A_src from t(I_src) at the same draw; the latents pulled
  toward (x_tg, X_tg) and the image term (on the untransformed image) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, attention_distance, pull_toward_image, static_video_latents, to_pil


@dataclass
class I2VGuard(Method):
    name = "i2vguard"
    alpha: float = 1.0  # weight of the spatial (encoder) attack L_enc, >= 0
    beta: float = 1.0  # weight of the diffusion (contrastive) attack L_con, >= 0
    gamma: float = 1.0  # weight of the temporal (attention) attack L_att, >= 0
    lam_image: float = 1.0  # weight of ||I_adv - I_src||^2 (Algorithm 1's first term), >= 0
    tau1: float = 1.0  # X0hat must be at least this far (latent MSE, >= 0) from the clean video's latents
    tau2: float = 0.5  # temporal maps must be at least this far (mean squared row distance, 0..2) from the clean ones
    pull_toward: str = "gray"  # image I_tg (and its static video V_tg) pulled toward: "gray" or "pattern"
    t_range: tuple[float, float] = (0.0, 1.0)  # fraction of the schedule to draw noise levels from, in [0, 1]
    frames: int | None = None  # frames of V0 and during the attack, >= 2 (None: the model's default)
    video_steps: int | None = None  # denoising steps of V0, >= 1 (None: the model's default)
    noise_draws: int | None = None  # None: a fresh (level, noise) every step; K >= 1: cycle through K draws
    #   fixed at setup, whose clean maps A_src are computed once (saves a forward pass per step)

    def setup(self, target, x, generator):
        num_frames = self.frames or target.num_frames
        self.x_src = x
        with torch.no_grad():
            tg = pull_toward_image(self.pull_toward, x)
            self.z_tg = target.image_latents(tg)
            self.enc_scale = (target.image_latents(x) - self.z_tg).pow(2).mean().clamp_min(1e-12)
            # the clean video, made with the protection's own seed (never a seed it is judged on)
            video = target.generate(to_pil(x), seed=generator.initial_seed(), num_frames=num_frames,
                                    num_inference_steps=self.video_steps, return_latents=True)
            self.X0 = video.latents.to(x.device)
            self.V0_frames = torch.from_numpy(video.frames)  # (F, H, W, 3) uint8, for robust mode
            self.X_tg = static_video_latents(target, tg, num_frames).to(self.X0.dtype)
            self.con_scale = (self.X0 - self.X_tg).pow(2).mean().clamp_min(1e-12)
            self.cond_src = target.condition(x, generator)  # clean conditioning, for the reference maps A_src
            self.draws = []
            for _ in range(self.noise_draws or 0):
                level, noise = self._draw(target, generator)
                self.draws.append((level, noise, *self._reference(target, level, noise, self.X0, self.cond_src)))
        self.step = 0

    def _draw(self, target, generator):
        """A noise level and a noise for the clean video."""
        level = target.sample_noise_level(1, generator, *self.t_range)
        noise = torch.randn(self.X0.shape, generator=generator, device=self.X0.device, dtype=self.X0.dtype)
        return level, noise

    @staticmethod
    def _reference(target, level, noise, X0, cond_src):
        """The noisy clean video X_t at a draw, and the clean image's maps A_src there."""
        X_t = target.add_noise(X0, noise, level)
        with torch.no_grad(), target.capture_attention() as maps_src:
            target.denoise(X_t, level, cond_src, maps_only=True)
        return X_t, maps_src

    def loss(self, target, x_adv, generator, transform=None):
        if self.draws:
            level, noise, X_t, maps_src = self.draws[self.step % len(self.draws)]
        else:
            level, noise = self._draw(target, generator)
            X_t = maps_src = None
        self.step += 1
        X0, x_in = self.X0, x_adv
        if transform is not None:  # every reference of the clean image under the same transformation
            x_in = transform(x_adv)
            with torch.no_grad():
                frames = self.V0_frames.to(x_adv.device).permute(0, 3, 1, 2)[None].float() / 255
                X0 = target.encode_video(transform(frames)).to(self.X0.dtype)
                cond_src = target.condition(transform(self.x_src), generator)
            X_t, maps_src = self._reference(target, level, noise, X0, cond_src)
        elif X_t is None:
            X_t, maps_src = self._reference(target, level, noise, X0, self.cond_src)
        cond = target.condition(x_in, generator)
        with target.capture_attention() as maps_adv:
            _, X0hat = target.denoise(X_t, level, cond)

        enc = (cond["image_latents"].float() - self.z_tg.float()).pow(2).mean() / self.enc_scale
        X0hat = X0hat.float()
        con_toward = (X0hat - self.X_tg.float()).pow(2).mean() / self.con_scale
        con_away = (X0hat - X0.float()).pow(2).mean()
        con = con_toward + torch.relu(self.tau1 - con_away)
        att_distance = attention_distance(maps_adv, maps_src)
        att = torch.relu(self.tau2 - att_distance)
        image = (x_adv - self.x_src).pow(2).mean()
        total = self.lam_image * image + self.alpha * enc + self.beta * con + self.gamma * att
        return {"loss": total, "enc": enc, "con": con, "con_away": con_away, "att": att,
                "att_distance": att_distance, "image": image}
