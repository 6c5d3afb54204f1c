"""What the embedded model's training world allows a protection: the most motion an eps ball can remove.

    python benchmarks/law_bound.py [--images coffee,astronaut,chelsea,rocket] [--eps 4,8,16] [--seeds 100,101]

The embedded model learned from clips whose motion follows one law (`training/data.py`,
`velocity_field`): a pixel moves in proportion to a smooth step of the local contrast around it, so
busy regions move and flat ones stay. The law is a differentiable function of the picture, so PGD on
the law itself finds, within the L-inf ball, the change that removes the most motion *according to
the law*: what a protection could reach on a model that had learned the law exactly and nothing else
(a model that is wrong elsewhere can be pushed further; one that is right cannot).

For each image, at the working size (center crop and resize, as the model sees it):
- law ratio: mean speed of the law's field over the frame, guarded / original (sign-PGD, 300 steps);
- model ratio: the embedded model's flow on that law-guarded photo, mean over video seeds / the
  original's (seeds disjoint from nothing: the law never sees the model or a seed);
- the same two ratios for the photo blurred by sigma 1, 2, 4 px (no budget), to see whether the model
  follows the law where the change is large.
Prints one line per image and candidate.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import PIL.Image
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.freeze_leads import flows  # noqa: E402
from guard.methods.base import to_pil  # noqa: E402
from guard.targets import load_target  # noqa: E402
from training.data import gaussian_blur, velocity_field  # noqa: E402


def law_speed(x: torch.Tensor) -> torch.Tensor:
    """Mean speed of the law's field over the picture (1, 3, H, W) in [0, 1], at unit bucket speed."""
    return velocity_field(x, torch.ones(1)).norm(dim=1).mean()


def law_pgd(x: torch.Tensor, eps: float, steps: int = 300) -> torch.Tensor:
    """The picture within +-eps (and [0, 1]) of x whose law speed is lowest (sign-PGD, step eps/50)."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(law_speed(x + delta), delta)
        with torch.no_grad():
            delta -= eps / 50 * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="coffee,astronaut,chelsea,rocket", help="names of examples/*.png")
    p.add_argument("--eps", default="4,8,16", help="budgets over 255")
    p.add_argument("--seeds", default="100,101", help="video seeds")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    target = load_target()
    print(f"embedded model, {target.height}x{target.width}, {target.num_frames} frames; video seeds {seeds}; "
          f"torch threads {torch.get_num_threads()}")

    def flow(x):
        return np.mean(flows(target, to_pil(x), seeds))

    rows = {}
    for name in args.images.split(","):
        image = target.prepare_image(PIL.Image.open(os.path.join(ROOT, "examples", f"{name}.png")))
        x = target.to_tensor(image)
        law0, flow0 = float(law_speed(x)), flow(x)
        print(f"{name}: law speed {law0:.3f} (bucket speed 1), model flow {flow0:.3f} px/frame", flush=True)
        candidates = [(f"blurred, sigma {s}", gaussian_blur(x, s)) for s in (1, 2, 4)]
        candidates += [(f"law PGD, eps {e}", law_pgd(x, int(e) / 255)) for e in args.eps.split(",")]
        for label, guarded in candidates:
            law, model = float(law_speed(guarded)) / law0, flow(guarded) / flow0
            rows.setdefault(label, []).append((law, model))
            print(f"  {label:20s} law ratio {law:.3f}   model ratio {model:.3f}", flush=True)
    print("mean over images:")
    for label, values in rows.items():
        law, model = np.mean(values, 0)
        print(f"  {label:20s} law ratio {law:.3f}   model ratio {model:.3f}")


if __name__ == "__main__":
    main()
