"""Does Vid-Freeze move what it optimises? Its loss (temporal attention energy) measured at fixed
noise draws, before and after protection, next to 1/F (uniform attention, the loss's floor).

The loss history of a protection is noisy (every step draws a new noise level), so a before/after
comparison at the same draws is the fair measure.

    python benchmarks/attention_energy.py [--model embedded] [--image examples/chelsea.png]
        [--eps 16] [--steps 16,60] [--draws 8]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from guard import io  # noqa: E402
from guard.jobs import Job, protect_photo  # noqa: E402
from guard.methods.vidfreeze import attention_at_draws  # noqa: E402
from guard.targets import load_target  # noqa: E402


def energy(target, image, draws):
    return np.array(attention_at_draws(target, target.to_tensor(image), range(draws))[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--image", default="examples/chelsea.png")
    parser.add_argument("--eps", type=int, default=16)
    parser.add_argument("--steps", default="16,60")
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args()
    target = load_target(args.model)
    image, _ = io.load_image(args.image)
    original = target.prepare_image(image)
    before = energy(target, original, args.draws)
    floor = 1 / target.num_frames
    print(f"{args.model}, {args.image}, eps {args.eps}/255, {args.draws} fixed draws; uniform attention = {floor:.4f}")
    print(f"original: energy {before.mean():.4f} ± {before.std():.4f}")
    for steps in map(int, args.steps.split(",")):
        t = time.perf_counter()
        # at the working size: the energy is measured on the image the attack optimised; the reference
        # preset: Vid-Freeze's own parameters, all the model's frames
        job = Job(method="vidfreeze", eps=args.eps, steps=steps, preset="reference", seed=0, working_size=True)
        result = protect_photo(target, image, job)
        after = energy(target, result.image, args.draws)
        moved = (before.mean() - after.mean()) / (before.mean() - floor)
        print(f"vidfreeze, {steps} steps ({time.perf_counter() - t:.1f} s): energy {after.mean():.4f} ± {after.std():.4f}, "
              f"{100 * moved:.0f}% of the way to uniform")


if __name__ == "__main__":
    main()
