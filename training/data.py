"""Procedural training video, rendered on the GPU in one batched pass (no per-frame Python loops).

A clip is a still picture animated by a camera (pan, zoom, roll) with up to three textured objects
moving over it. Pictures come from files shipped inside Python packages (scikit-image's data folder,
scikit-learn's two sample photos when installed) and from procedural textures; nothing is downloaded.
The project's example images (astronaut, chelsea, coffee, rocket) are held out for evaluation.

The motion bucket is tied to speed, like SVD's motion_bucket_id (which SVD computed from optical
flow): bucket b in [0, 255] means about b / 255 * MAX_SPEED pixels per frame of mean displacement.
"""

from __future__ import annotations

import math
import os

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

HELD_OUT = ("astronaut", "chelsea", "coffee", "rocket")  # examples/ and evaluation: never trained on
MAX_SPEED = 6.0  # px/frame at the output resolution for motion_bucket_id 255
BANK_SIZE = 256  # every picture is stored as a BANK_SIZE^2 square; clips view part of it


def _skimage_pictures() -> dict[str, np.ndarray]:
    """The photographs and textures bundled in scikit-image's data folder (read as files)."""
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    names = [
        "brick.png", "camera.png", "cell.png", "clock_motion.png", "coins.png", "color.png", "grass.png",
        "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "microaneurysms.png",
        "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "text.png",
        "chessboard_RGB.png", "phantom.png",
    ]  # fmt: skip
    pictures = {}
    for name in names:
        stem = name.split(".")[0]
        assert stem not in HELD_OUT, f"{stem} is held out for evaluation"
        path = os.path.join(folder, name)
        if os.path.exists(path):
            pictures[stem] = np.asarray(PIL.Image.open(path).convert("RGB"))
    return pictures


def _sklearn_pictures() -> dict[str, np.ndarray]:
    try:  # on the GPU machine; optional elsewhere
        from sklearn.datasets import load_sample_images
    except ImportError:
        return {}
    data = load_sample_images()
    return {os.path.basename(f).split(".")[0]: img for f, img in zip(data.filenames, data.images)}


def load_pictures() -> dict[str, np.ndarray]:
    """All training pictures as uint8 (H, W, 3) arrays, by name."""
    return {**_skimage_pictures(), **_sklearn_pictures()}


def picture_bank(pictures: dict[str, np.ndarray], device) -> torch.Tensor:
    """Square crops of every picture, (P, 3, BANK_SIZE, BANK_SIZE) in [0, 1] on `device`.

    Three crops along the long side of each picture plus the whole picture squeezed, so that the
    bank holds both details and full views.
    """
    crops = []
    for img in pictures.values():
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
        h, w = x.shape[-2:]
        s = min(h, w)
        for frac in (0.0, 0.5, 1.0):
            top, left = int((h - s) * frac), int((w - s) * frac)
            crops.append(F.interpolate(x[..., top : top + s, left : left + s], size=BANK_SIZE, mode="area"))
        crops.append(F.interpolate(x, size=(BANK_SIZE, BANK_SIZE), mode="area"))
    return torch.cat(crops).to(device)


def procedural_textures(n: int, generator: torch.Generator, device) -> torch.Tensor:
    """n random textures (n, 3, BANK_SIZE, BANK_SIZE) in [0, 1]: multi-octave smooth noise through a
    random periodic colour map, optionally multiplied by stripes, so that both soft and sharp,
    both busy and flat regions appear."""
    S = BANK_SIZE
    out = torch.zeros(n, 3, S, S, device=device)
    for octave, size in enumerate((4, 8, 16, 32, 64)):  # 5 octaves, batched over n
        noise = torch.randn(n, 3, size, size, generator=generator, device=device)
        weight = torch.rand(n, 1, 1, 1, generator=generator, device=device) * 0.5**octave * 2
        out += weight * F.interpolate(noise, size=S, mode="bicubic", align_corners=False)
    freq = 1 + 4 * torch.rand(n, 3, 1, 1, generator=generator, device=device)
    phase = 2 * math.pi * torch.rand(n, 3, 1, 1, generator=generator, device=device)
    tex = 0.5 + 0.5 * torch.sin(freq * out + phase)
    # stripes or checkers on a third of them: sharp edges, which smooth noise lacks
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S, device=device), torch.linspace(-1, 1, S, device=device), indexing="ij")
    angle = math.pi * torch.rand(n, 1, 1, generator=generator, device=device)
    k = 4 + 20 * torch.rand(n, 1, 1, generator=generator, device=device)
    u = torch.cos(angle) * xx + torch.sin(angle) * yy
    v = -torch.sin(angle) * xx + torch.cos(angle) * yy
    stripes = (torch.sin(k * u) > 0).float()
    checkers = ((torch.sin(k * u) > 0) ^ (torch.sin(k * v) > 0)).float()
    kind = torch.randint(0, 3, (n, 1, 1), generator=generator, device=device)
    pattern = torch.where(kind == 0, stripes, torch.where(kind == 1, checkers, torch.ones_like(stripes)))
    return (tex * (0.55 + 0.45 * pattern[:, None])).clamp(0, 1)


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    """(...,) angles -> (..., 2, 2) rotation matrices."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


class ClipRenderer:
    """Renders batches of clips (B, F, 3, R, R) in [-1, 1] with their motion buckets (B,)."""

    def __init__(self, bank: torch.Tensor, resolution: int = 128, num_frames: int = 8, num_textures: int = 128, seed: int = 0):
        self.device = bank.device
        self.res, self.frames = resolution, num_frames
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.photos = bank
        self.num_textures = num_textures
        self.refresh_textures()
        r = torch.linspace(-1, 1, resolution, device=self.device)
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        self.base = torch.stack([xx, yy], -1)  # (R, R, 2) output pixel grid, normalised (x, y)

    def refresh_textures(self) -> None:
        """New procedural textures (call now and then: the photos are fixed, the textures need not be)."""
        tex = procedural_textures(self.num_textures, self.generator, self.device)
        self.bank = torch.cat([self.photos, tex])

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def _pick(self, B: int) -> torch.Tensor:
        """B pictures from the bank, colour-jittered: gains, channel order, gamma, flips."""
        idx = torch.randint(0, len(self.bank), (B,), generator=self.generator, device=self.device)
        img = self.bank[idx]  # (B, 3, S, S)
        perm = torch.argsort(self._rand(B, 3), dim=1)  # random channel order
        img = torch.gather(img, 1, perm[:, :, None, None].expand_as(img))
        gray = img.mean(1, keepdim=True)
        sat = 0.6 + 0.8 * self._rand(B, 1, 1, 1)
        img = (gray + sat * (img - gray)) * (0.7 + 0.6 * self._rand(B, 3, 1, 1))
        img = img.clamp(1e-3, 1) ** (0.7 + 0.6 * self._rand(B, 1, 1, 1))
        flip = self._rand(B) < 0.5
        img = torch.where(flip[:, None, None, None], img.flip(-1), img)
        return img

    def __call__(self, batch_size: int, motion_bucket: torch.Tensor | None = None):
        B, Fr, R = batch_size, self.frames, self.res
        dev = self.device
        if motion_bucket is None:
            motion_bucket = torch.randint(0, 256, (B,), generator=self.generator, device=dev)
        speed = motion_bucket.float() / 255 * MAX_SPEED  # (B,) px/frame
        t = torch.arange(Fr, device=dev, dtype=torch.float32)  # (F,)
        px = 2.0 / R  # one output pixel in normalised units

        # 1. Camera: a random mix of pan, zoom and roll, each scaled so the mean displacement ~ speed.
        #    A quarter of the clips have a still camera and only moving objects.
        w = -torch.log(self._rand(B, 3))  # exponential -> a Dirichlet mix after normalising
        w = w / w.norm(dim=1, keepdim=True) * (self._rand(B, 1) > 0.25)
        mean_radius = 0.38 * R  # mean distance of a pixel from the centre of a square
        direction = 2 * math.pi * self._rand(B)
        pan = torch.stack([torch.cos(direction), torch.sin(direction)], -1) * (speed * w[:, 0])[:, None] * px  # (B, 2)
        zoom = (speed * w[:, 1] / mean_radius) * torch.sign(self._rand(B) - 0.5)  # log-scale per frame
        roll = (speed * w[:, 2] / mean_radius) * torch.sign(self._rand(B) - 0.5)  # radians per frame
        scale0 = 0.3 + 0.4 * self._rand(B)  # the view covers 30-70% of the picture's width
        centre0 = (self._rand(B, 2) - 0.5) * 2 * (1 - scale0[:, None]) * 0.5
        tc = t - (Fr - 1) / 2  # centre the camera path on the picture
        scale = scale0[:, None] * torch.exp(-zoom[:, None] * tc)  # (B, F)
        A = scale[..., None, None] * _rotation(roll[:, None] * tc)  # (B, F, 2, 2)
        # a shift of the sampling grid by d moves the content by d / scale on screen
        shift = centre0[:, None] + (pan * scale0[:, None])[:, None] * tc[None, :, None]  # (B, F, 2)
        grid = torch.einsum("bfij,hwj->bfhwi", A, self.base) + shift[:, :, None, None]
        bg = self._pick(B)
        video = F.grid_sample(
            bg.repeat_interleave(Fr, 0), grid.reshape(B * Fr, R, R, 2), mode="bilinear", padding_mode="reflection", align_corners=False
        ).view(B, Fr, 3, R, R)

        # 2. Objects: textured superellipses moving rigidly (translation + spin), over the camera's view.
        for _ in range(3):
            present = self._rand(B) < 0.6
            radius = (0.08 + 0.22 * self._rand(B, 2)) * 2  # half-axes, normalised units
            power = 2 + 6 * self._rand(B)  # 2 = ellipse, larger = rounded rectangle
            start = (self._rand(B, 2) - 0.5) * 1.4
            heading = 2 * math.pi * self._rand(B)
            v = torch.stack([torch.cos(heading), torch.sin(heading)], -1) * (speed * (0.7 + 0.8 * self._rand(B)))[:, None] * px
            spin = (self._rand(B) - 0.5) * speed / (R * 0.15)
            angle0 = 2 * math.pi * self._rand(B)
            centre = start[:, None] + v[:, None] * tc[None, :, None]  # (B, F, 2)
            rot = _rotation(-(angle0[:, None] + spin[:, None] * t))  # (B, F, 2, 2)
            local = torch.einsum("bfij,bfhwj->bfhwi", rot, self.base[None, None] - centre[:, :, None, None])
            local = local / radius[:, None, None, None]  # (B, F, R, R, 2): the object's own frame
            d = (local.abs() ** power[:, None, None, None, None]).sum(-1) ** (1 / power[:, None, None, None])
            alpha = torch.sigmoid((1 - d) * 25) * present[:, None, None, None]  # soft edge
            tex = self._pick(B)
            colour = F.grid_sample(
                tex.repeat_interleave(Fr, 0), (local * 0.5).reshape(B * Fr, R, R, 2), mode="bilinear", padding_mode="reflection", align_corners=False
            ).view(B, Fr, 3, R, R)
            video = video * (1 - alpha[:, :, None]) + colour * alpha[:, :, None]

        return video.clamp(0, 1) * 2 - 1, motion_bucket
