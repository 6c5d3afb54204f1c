"""How much of each held-out image the VAE keeps, against a linear code of the same size.

    python training/vae_ceiling.py [--model guard/models/embedded]

Frame 0 of a generated video cannot be closer to the input than the VAE's round trip (encode, mode,
decode: frame 0 of the still video, as evaluate.py's floor section measures it). This prints that round trip for each held-out image beside the same image coded linearly
with as many numbers: the first C principal components (C = the VAE's latent channels) of its 8x8
patches, the components fitted on the training pictures (training/data.py; no held-out image). A
VAE far below the linear code loses in its encoder what a better one would keep.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import PIL.Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from guard import metrics  # noqa: E402
from guard.targets import load_target  # noqa: E402
from training.data import load_pictures  # noqa: E402
from training.evaluate import ROOT, held_out_images, static_video  # noqa: E402


def patches(img: np.ndarray, k: int) -> np.ndarray:
    h, w, c = img.shape
    return img.reshape(h // k, k, w // k, k, c).transpose(0, 2, 1, 3, 4).reshape(-1, k * k * c)


def unpatch(p: np.ndarray, shape, k: int) -> np.ndarray:
    h, w, c = shape
    return p.reshape(h // k, w // k, k, k, c).transpose(0, 2, 1, 3, 4).reshape(h, w, c)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "guard", "models", "embedded"))
    args = p.parse_args()
    target = load_target(args.model)
    vae = target.pipe.vae
    k = 2 ** (len(vae.config.block_out_channels) - 1)
    channels = vae.config.latent_channels
    train = [np.asarray(target.prepare_image(PIL.Image.fromarray(img)), np.float64) / 255 for img in load_pictures().values()]
    data = np.concatenate([patches(x, k) for x in train])
    mean = data.mean(0)
    basis = np.linalg.svd(data - mean, full_matrices=False)[2][:channels]
    print(f"{args.model}: {k}x{k} patches, {channels} numbers each (the VAE's latent channels); PCA fitted on {len(train)} training pictures")
    rows = []
    for name, image in held_out_images(target).items():
        x = np.asarray(image)
        y = static_video(target, image, target.num_frames)[0]  # as evaluate.py's floor section: frame 0 of the still video
        xp = patches(x.astype(np.float64) / 255, k)
        lin = unpatch((xp - mean) @ basis.T @ basis + mean, x.shape, k)
        lin = (np.clip(lin, 0, 1) * 255).round().astype(np.uint8)
        rows.append((metrics.psnr(y, x), metrics.psnr(lin, x)))
        print(f"{name:13s} VAE round trip {rows[-1][0]:.1f} dB   linear code ({channels} PCA components) {rows[-1][1]:.1f} dB")
    vae_mean, lin_mean = np.mean(rows, 0)
    print(f"{'mean':13s} VAE round trip {vae_mean:.1f} dB   linear code {lin_mean:.1f} dB")


if __name__ == "__main__":
    main()
