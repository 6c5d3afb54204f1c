"""Leads for a freezing protection, measured on the embedded model: what moves its motion, and how far.

    python benchmarks/freeze_leads.py [--images coffee,astronaut] [--eps 8,16] [--seeds 100,101]

Not shipped methods: two objectives tried beside guard's `freeze` on the shared PGD loop, and one
oracle, each judged by the flow of videos made at seeds the protection never saw (the protection's
seed is 7), against the original's video at the same seed:

- blurred photo (oracle, no budget): the photo itself Gaussian-blurred (sigma 1, 2, 4 px at the
  working size). In the model's training world flat and blurred pictures stay still, so this says how
  much motion a change far larger than any eps ball removes.
- `lookstill`: pull what the model reads from the photo, the VAE latent and the CLIP embedding, toward
  those of the blurred photo (sigma 4); no denoiser call.
- `rollout`: the first `k` Euler steps of the model's own sampler from pure noise (no classifier-free
  guidance, bucket 127, 4 noise draws fixed at setup), then the predicted clean video's drift from its
  frame 0, divided by its value at the clean photo (BadWorld's Drift-Min on a few differentiable
  sampler steps).
- `freeze` (guard's, its fast preset) and the `noise` control, for reference.

Everything at the working size (center crop and resize first), fp32 on the CPU. Prints one line per
image and candidate: flow ratio (mean over seeds of guarded flow / mean of original flow), the flows,
the protection's seconds and its last loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from guard import metrics  # noqa: E402
from guard.jobs import Job, animate, control_of, protect_photo  # noqa: E402
from guard.methods.base import Method, to_pil  # noqa: E402
from guard.optimize import PGDConfig, protect  # noqa: E402
from guard.targets import load_target  # noqa: E402
from training.data import gaussian_blur  # noqa: E402


@dataclass
class LookStill(Method):
    name = "lookstill"
    sigma: float = 4.0

    def setup(self, target, x, generator):
        with torch.no_grad():
            blurred = gaussian_blur(x, self.sigma)
            self.z_ref, self.e_ref = target.image_latents(blurred), target.image_embeddings(blurred)
            self.s_z = (target.image_latents(x) - self.z_ref).pow(2).mean()
            self.s_e = (target.image_embeddings(x) - self.e_ref).pow(2).mean()

    def loss(self, target, x_adv, generator, transform=None):
        lz = (target.image_latents(x_adv) - self.z_ref).pow(2).mean() / self.s_z
        le = (target.image_embeddings(x_adv) - self.e_ref).pow(2).mean() / self.s_e
        return {"loss": lz + le, "latent": lz, "embedding": le}


@dataclass
class Rollout(Method):
    name = "rollout"
    k: int = 2  # Euler steps taken with gradients before the drift is read
    frames: int = 8
    draws: int = 4

    def setup(self, target, x, generator):
        scheduler = target.pipe.scheduler
        scheduler.set_timesteps(target.num_inference_steps)
        self.sigmas = scheduler.sigmas.float().to(target.device)
        c = target.vae.config.latent_channels
        shape = (1, self.frames, c, target.height // 8, target.width // 8)
        self.noises = [torch.randn(shape, generator=generator) for _ in range(self.draws)]
        self.i = 0
        with torch.no_grad():
            self.scale = [float(self._drift(target, x, generator, n)) for n in self.noises]

    def _drift(self, target, x, generator, noise):
        cond = target.condition(x, generator)
        z = noise * self.sigmas[0]
        for i in range(self.k):
            s, s_next = self.sigmas[i], self.sigmas[i + 1]
            _, x0 = target.denoise(z, s.view(1), cond)
            z = z + (z - x0) / s * (s_next - s)
        _, x0 = target.denoise(z, self.sigmas[self.k].view(1), cond)
        return (x0[:, 1:] - x0[:, :1]).square().mean()

    def loss(self, target, x_adv, generator, transform=None):
        j = self.i % self.draws
        self.i += 1
        return {"loss": self._drift(target, x_adv, generator, self.noises[j]) / self.scale[j]}


#: the protections' own seed, never a video seed
SEED = 7


def flows(target, image, seeds):
    return [float(metrics.flow_per_frame(animate(target, image, s)).mean()) for s in seeds]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="coffee,astronaut", help="names of examples/*.png")
    p.add_argument("--eps", default="8,16", help="budgets over 255")
    p.add_argument("--seeds", default="100,101", help="video seeds (never the protection's, 7)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    assert SEED not in seeds, f"seed {SEED} is the protection's"
    target = load_target()
    print(f"embedded model, {target.height}x{target.width}, {target.num_frames} frames; video seeds {seeds}; "
          f"torch threads {torch.get_num_threads()}")

    def freeze(eps):  # guard's, as the app runs it (`guard.jobs`)
        return Job(method="freeze", eps=eps, seed=SEED, working_size=True)

    def trial(method, steps):  # a method guard does not ship: on the same loop, with the same settings
        return lambda image, eps: protect(target, image, method(), PGDConfig(eps=eps / 255, steps=steps, seed=SEED,
                                                                            working_size=True))

    candidates = [("noise control", lambda image, eps: protect_photo(target, image, control_of(freeze(eps)))),
                  ("freeze (fast preset)", lambda image, eps: protect_photo(target, image, freeze(eps))),
                  ("lookstill, 50 steps", trial(LookStill, 50)),
                  ("rollout k=0, 20 steps", trial(lambda: Rollout(k=0), 20)),
                  ("rollout k=2, 20 steps", trial(lambda: Rollout(k=2), 20)),
                  ("rollout k=0, 100 steps", trial(lambda: Rollout(k=0), 100))]
    for name in args.images.split(","):
        image = target.prepare_image(PIL.Image.open(os.path.join(ROOT, "examples", f"{name}.png")))
        reference = flows(target, image, seeds)
        base = np.mean(reference)
        print(f"{name}: original flow {np.round(reference, 3)} px/frame", flush=True)
        x = target.to_tensor(image)
        for sigma in (1, 2, 4):
            f = flows(target, to_pil(gaussian_blur(x, sigma)), seeds)
            print(f"  {'blurred photo, sigma ' + str(sigma):32s} ratio {np.mean(f) / base:.3f}  flows {np.round(f, 3)}", flush=True)
        for eps in [int(e) for e in args.eps.split(",")]:
            for label, guarded in candidates:
                if eps != 8 and label.split(",")[0] not in ("noise control", "freeze (fast preset)", "rollout k=0"):
                    continue  # above 8/255: the control and the two best at 8/255
                if eps != 8 and "100 steps" in label:
                    continue
                start = time.perf_counter()
                result = guarded(image, eps)
                seconds = time.perf_counter() - start
                f = flows(target, result.image, seeds)
                last = {k: round(v[-1], 3) for k, v in result.history.items()}
                print(f"  {label + f', eps {eps}':32s} ratio {np.mean(f) / base:.3f}  flows {np.round(f, 3)}  "
                      f"{seconds:.1f} s  last {last}", flush=True)


if __name__ == "__main__":
    main()
