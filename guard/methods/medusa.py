"""MEDUSA (ICML 2026, Yu, Zha et al.): collapse the rank of temporal attention, so that every frame
attends alike and the video stops moving.

Read from its public code (github medusa-research/medusa, SVD through `sgm`; file:line at the
commit 9cd3c1b, "Polish README layout"):

    z = E(I_adv) repeated over F frames               # the static video of the image (attack.py:93-94)
    x = z + sigma * n,  sigma = sigmas[4] of a 25-step EDM schedule, n one fixed draw (attack.py:76-77, 95-103)
    one denoiser call with CFG, batch [uncond; cond] (utils/svd.py:81-97, sgm guiders.py:88-99)
    A = softmax(Q K^T / sqrt(d)) from the to_q / to_k outputs of the temporal attn1 of
        sgm input_blocks[5] (utils/attention.py:7, 38-83), conditional half only (attention.py:106-107)
    L = mean over maps of ||A||_* (torch.linalg.svdvals(A).sum(), attention.py:108-110)
    50 signed-gradient steps, eps 16/255 and step 0.02 in [-1, 1] units (attack.py:63-65, 119-123)

What the nuclear norm rewards: for a row-stochastic F x F map A (rows on the simplex), A 1 = 1, so
||A||_* >= ||A||_2 >= ||A 1|| / ||1|| = 1, with equality only for the uniform map (1/F) 1 1^T; the
identity (each frame attends to itself) has F, the most any such map has. A rank-1 map 1 p^T (every
frame attends alike, with weights p) has ||A||_* = sqrt(F) ||p||_2, between 1 (p uniform) and sqrt(F)
(p one-hot). So the minimum is Vid-Freeze's (uniform attention), but the way there differs: the
gradient of ||A||_* is U V^T, which pulls every singular value down by the same amount, so the small
ones (the frame-specific part of the attention, what lets frames differ) are driven to zero as hard
as the large one: rank collapse first. Vid-Freeze's ||A||_F^2 pulls each singular value in proportion
to its size and barely touches the small ones.

Mapping onto guard (where MEDUSA names sgm or SVD, what guard reads; `layer`, `video_step`,
`video_steps`, `frames` and `noise_draws` change it):
- The block. sgm's VideoUNet for SVD (channel_mult 1,2,4,4, two res blocks per level, attention at
  levels 0-2; sgm video_model.py:261-328) has input_blocks [0] conv, [1], [2] level 0, [3] downsample,
  [4], [5] level 1: input_blocks[5] is the second spatio-temporal transformer of level 1, which in
  diffusers' `UNetSpatioTemporalConditionModel` is `down_blocks[1].attentions[1]`. In guard's layer
  order (temporal attn1 layers as the forward runs them: down_blocks[0].attentions[0, 1],
  down_blocks[1].attentions[0, 1], ...) that is layer 4 of 16 on SVD and SVD-XT. The rule guard
  applies to any SVD-format UNet: the last temporal attention layer of the first two down blocks (sgm's
  levels 0 and 1). On the embedded model (down_blocks[0] has no attention, one layer per block) that is
  down_blocks[1].attentions[0], layer 1 of 7, the only temporal attention at half the latent size, the
  level MEDUSA reads; on tiny-svd (attention in down_blocks[0] only) layer 2.
- Full 3D attention (CogVideoX, Wan, LTX-Video: no temporal layers, `capture_attention` gives each
  block's frame-to-frame map, (B, heads, F', F') over latent frames): block 4 (blocks[3]), or the last
  block of a model with fewer. Why: it is the same forward position as SVD's (the fourth attention layer
  the latents pass through, an early one), Immune2V attacks Wan at the output of its block 3, and the
  forward stops there (4 of 30-42 blocks: 1.33 s an attack step instead of 12.4 s on Wan 2.1 14B,
  ../shared/NOTES.md). MEDUSA's paper also attacks LTX-Video, but that code is not public.
- The noise level: sgm's EDMDiscretization(sigma_max=700) over 25 steps (svd.yaml; discretizer.py:
  28-39), sigmas[4] = 244.02, equals `target.noise_levels(25)[4]` on SVD's diffusers scheduler
  (Karras sigmas between 0.002 and 700): the level the pipeline's step 4 of 25 denoises. On every
  family guard uses the same step of the same schedule length: CogVideoX timestep 839 (DDIM, 25 steps),
  Wan flow sigma 0.94 (UniPC, 25 steps; on Wan 2.2 A14B the high-noise expert), LTX-Video its flow sigma
  shifted for the video's token count (0.92 on tiny-ltx).
- The conditional half: guard's `denoise` is one conditional call, MEDUSA's conditional half. Nothing
  in the UNet mixes batch entries (GroupNorm, LayerNorm and attention are per sample), so the maps
  and their gradients are the same; the unconditional half is never computed.
- Conditioning as MEDUSA's: motion bucket 127, fps id 6 (SVD's fps - 1 with fps 7), noise augmentation
  0.02 (attack.py:59-61) are the SVD target's defaults.

Where guard differs from the public code, and why:
- diffusers' UNet instead of sgm's (guard's families are diffusers pipelines); the map is recomputed
  from the same to_q / to_k outputs with the same scale dim_head^-0.5 (`TemporalAttentionRecorder`).
- The forward stops right after the layer read (`maps_only`); theirs runs the whole UNet and drops its
  output. The loss and its gradient are the same; the step is cheaper.
- Frames: the model's own (SVD-XT 25, the embedded model 8) where theirs uses 14 (attack.py:57,
  SVD's default); the attack reads the video the model makes.
- The static video is the clean photo's, encoded once at setup (posterior mode, no gradient), not the
  guarded image re-encoded every iteration with gradients through a posterior sample (attack.py:93,
  utils/svd.py:100-103, sgm's DiagonalGaussianRegularizer samples). On SVD at sigma = 244 the latent
  is about 1/244 of the noisy input, so that path carries almost nothing; re-encoding F frames every
  step is the costliest part of a step on SVD-XT (../shared/NOTES.md). (On the flow and DDIM families
  at step 4 the latent weighs more, 6-8% of the input on Wan and LTX; MEDUSA gives no code for them.) The gradient reaches the image through
  the conditioning (CLIP embedding and VAE latent), as in theirs.
- The noise: one draw fixed at setup (`noise_draws=1`), the conditioning's noise augmentation fixed
  with it, as theirs (torch.manual_seed(seed) before every draw, attack.py:95, whose conditioning draws
  next, utils/svd.py:58), but from the protection's generator, not the global RNG at seed 23.
  `noise_draws=k` cycles k fixed draws; None draws afresh every step.
- Loop settings belong to guard's PGD loop (`PGDConfig`), not to the method: MEDUSA's eps 16/255 in
  [-1, 1] units (the image is ToTensor * 2 - 1, attack.py:43) is 8/255 in guard's [0, 1] units, its
  step 0.02 is 0.01 = 2.55/255, and it starts from the clean image (attack.py:74); guard's default step is 2.5 eps / steps (0.4/255 at 50 steps) from
  a random start, and its views (the pipeline's resize or a crop, at 0.9-1.1x) are an expectation over
  how the photo reaches the model, which theirs (the photo cropped to a multiple of 64) does not have.

Example:
    >>> from guard.methods import get_method
    >>> from guard.optimize import PGDConfig, protect
    >>> result = protect(target, photo, get_method("medusa"),
    ...                  PGDConfig(eps=8 / 255, steps=50, step_size=0.01, random_start=False))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, static_video_latents

#: MEDUSA's schedule (attack.py: num_steps=25, target_timestep=4)
MEDUSA_VIDEO_STEPS = 25
MEDUSA_VIDEO_STEP = 4
#: the block read on full 3D attention families (see the module docstring)
TRANSFORMER_BLOCK = 4


def nuclear_norm(maps: torch.Tensor) -> torch.Tensor:
    """Mean nuclear norm (sum of singular values) of attention maps (..., F, F), in float32.

    For rows that sum to one it lies in [1, F]: 1 only for the uniform map, sqrt(F) ||p||_2 for a
    rank-1 map whose rows all equal p, F for a permutation (the identity: each frame attends to itself).
    `torch.linalg.svdvals`, as MEDUSA; its gradient is stable even at repeated singular values."""
    return torch.linalg.svdvals(maps.float().flatten(0, -3)).sum(-1).mean()


def medusa_layer(target) -> int:
    """The captured layer (counted from 1 in forward order) that stands for MEDUSA's sgm
    input_blocks[5] on this model: on an SVD-format UNet the last temporal attention layer of its first
    two down blocks (at least the first layer); on a full 3D attention family block 4, or its last
    block if it has fewer."""
    down_blocks = getattr(target.denoiser, "down_blocks", None)
    if down_blocks is not None:
        n = sum(len(attention.temporal_transformer_blocks)
                for block in down_blocks[:2] for attention in getattr(block, "attentions", ()))
        return max(n, 1)
    return min(TRANSFORMER_BLOCK, target.num_attention_layers)


@dataclass
class Medusa(Method):
    name = "medusa"
    frames: int | None = None  # frames during the attack, >= 2 (None: the model's default)
    layer: int | None = None  # the captured layer read, >= 1, counted in forward order (None: MEDUSA's block)
    video_steps: int | None = MEDUSA_VIDEO_STEPS  # length of the schedule the level is read from (None: the model's)
    video_step: int = MEDUSA_VIDEO_STEP  # its step whose noise level is used, 0 = the noisiest, < video_steps
    noise_draws: int | None = 1  # draws fixed at setup and cycled, >= 1; None: a fresh draw every step

    def __post_init__(self):
        super().__post_init__()
        if self.video_steps is not None and self.video_step >= self.video_steps:
            raise ValueError(f"video_step must be below video_steps ({self.video_steps}), got {self.video_step!r}")

    def setup(self, target, x, generator):
        self.x = x
        self.read = self.layer or medusa_layer(target)
        if self.read > target.num_attention_layers:
            raise ValueError(f"layer must be at most {target.num_attention_layers} (the attention layers "
                             f"{getattr(target, 'name', target.family)} records), got {self.read!r}")
        levels = target.noise_levels(self.video_steps)
        if self.video_step >= len(levels):
            raise ValueError(f"video_step must be below the schedule's {len(levels)} steps, got {self.video_step!r}")
        self.level = levels[self.video_step].reshape(1)
        self.reference = static_video_latents(target, x, self.frames or target.num_frames)  # (B, F', C, h, w)
        # each fixed draw: the noise, and a seed for the conditioning's own randomness (SVD's noise
        # augmentation), so that the whole denoiser input is the same every time the draw comes back
        self.draws = []
        for _ in range(self.noise_draws or 0):
            noise = self._noise(self.reference, generator)
            seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
            self.draws.append((noise, seed))
        self.step = 0

    @staticmethod
    def _noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def loss(self, target, x_adv, generator, transform=None):
        reference = self.reference
        if transform is not None:  # the video the model animates is the transformed photo's
            x_adv = transform(x_adv)
            reference = static_video_latents(target, transform(self.x), self.frames or target.num_frames)
        if self.draws:
            noise, seed = self.draws[self.step % len(self.draws)]
            cond_generator = torch.Generator(generator.device).manual_seed(seed)
        else:
            noise, cond_generator = self._noise(reference, generator), generator
        self.step += 1
        level = self.level.expand(reference.shape[0])
        noisy = target.add_noise(reference, noise, level)
        cond = target.condition(x_adv, cond_generator)
        with target.capture_attention(self.read) as maps:
            target.denoise(noisy, level, cond, maps_only=True)  # stops right after the layer read
        assert len(maps) == self.read, f"{len(maps)} attention layers ran, expected {self.read}"
        norm = nuclear_norm(maps[-1])
        return {"loss": norm, "nuclear_norm": norm}
