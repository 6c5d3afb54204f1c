"""Procedural training video where the picture decides what moves, rendered on the GPU in one pass.

The world of these clips has one law, applied to every picture alike, so that (as in real footage)
what moves and how is read off what the picture shows, not drawn at random:

- **Busy things move, flat things stay.** A pixel's mobility is a smooth step of the local contrast
  of the picture around it (luminance standard deviation in a window of about 4 px): textured
  regions (foliage, fur, fabric, crowds of detail) move, flat ones (sky, walls, out-of-focus
  background) hold still. A picture that is flat everywhere, or strongly blurred, makes a still clip.
- **Colour says which way.** The direction of motion is the local mean colour's hue in an opponent
  plane (red-green, yellow-blue), with a small bias to the right so that grey textures move too.
- **The motion bucket sets how fast.** Every clip draws a speed; a fully mobile pixel moves that
  many px/frame. Motion is a smooth, constant-velocity flow of the content (each point travels
  along its own velocity, rendered by inverting the map with a fixed-point iteration), content
  entering from a margin around the frame.
- **The bucket is the clip's measured flow**, as SVD computed its motion_bucket_id from optical
  flow: the mean flow magnitude over the pixels that move (>= 0.2 px/frame), known exactly from the
  render, scaled so that bucket 255 is FLOW_AT_BUCKET_255 px/frame. Over the pixels that move, not
  the whole frame: the bucket then says how fast things move and the picture which things move.
  10% of clips are still by default (speed 0, bucket 0; train.py --still-clips); flat and blurred
  pictures give bucket 0 at any speed.

Pictures: photographs and textures shipped inside Python packages (scikit-image's data folder,
scikit-learn's two sample photos, gradio's sample photos; training/pictures.py adds 42 more from
package archives on PyPI), at random crops, scales, flips, hue rotations, saturation and tints,
plus procedural textures; 15% are blurred (out of focus, so still). No dataset is downloaded. The
project's example images (astronaut, chelsea, coffee, rocket) and grace_hopper (matplotlib's sample
photo) are held out for evaluation.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

HELD_OUT = ("astronaut", "chelsea", "coffee", "rocket", "grace_hopper")  # evaluation only, never trained on
FLOW_AT_BUCKET_255 = 5.0  # px/frame of the moving pixels (at the model's width of 256) for bucket 255
MAX_SPEED = 5.0  # px/frame of a fully mobile pixel
MOVING = 0.2  # px/frame: a pixel slower than this counts as still for the bucket
MARGIN = 64  # px of picture around the frame, where entering content comes from
CONTRAST = (0.03, 0.09)  # local luminance std: below the first still, above the second fully mobile
TILE_SCALE = 1.25  # bank tiles are this much larger than the source window, for crop/scale jitter


def picture_array(file) -> np.ndarray:
    """A picture file (a path or a file object) as uint8 (H, W, 3); a transparent one on white."""
    img = PIL.Image.open(file)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = PIL.Image.alpha_composite(PIL.Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def _skimage_pictures() -> dict[str, np.ndarray]:
    """The photographs and textures bundled in scikit-image's data folder (read as files)."""
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    names = [
        "brick.png", "camera.png", "cell.png", "clock_motion.png", "coins.png", "color.png", "grass.png",
        "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
        "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "text.png",
        "chessboard_RGB.png", "phantom.png",
    ]  # fmt: skip
    pictures = {}
    for name in names:
        stem = name.split(".")[0]
        assert stem not in HELD_OUT, f"{stem} is held out for evaluation"
        path = os.path.join(folder, name)
        if os.path.exists(path):
            pictures[stem] = picture_array(path)  # horse, logo: transparent, on white
    return pictures


def _sklearn_pictures() -> dict[str, np.ndarray]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return {}
    data = load_sample_images()
    return {os.path.basename(f).split(".")[0]: img for f, img in zip(data.filenames, data.images)}


def _gradio_pictures() -> dict[str, np.ndarray]:
    """The photographs among gradio's bundled assets (gradio is the app's own dependency)."""
    try:
        import gradio
    except ImportError:
        return {}
    folder = os.path.dirname(gradio.__file__)
    files = {"cheetah": "media_assets/images/cheetah.jpg", "cheetah1": "media_assets/images/cheetah1.jpg",
             "cheetah2": "test_data/cheetah2.jpg", "lion": "media_assets/images/lion.jpg", "tower": "media_assets/images/tower.jpg"}
    paths = {k: os.path.join(folder, f) for k, f in files.items()}
    return {k: picture_array(path) for k, path in paths.items() if os.path.exists(path)}


def load_pictures() -> dict[str, np.ndarray]:
    """All training pictures as uint8 (H, W, 3) arrays, by name."""
    pictures = {**_skimage_pictures(), **_sklearn_pictures(), **_gradio_pictures()}
    assert not set(pictures) & set(HELD_OUT), "a held-out picture slipped into training"
    return pictures


def save_pictures(path: str, names: list[str] | None = None) -> None:
    """Write training pictures (all, or `names`) to one .npz, to carry to a machine that lacks a package."""
    pictures = load_pictures()
    np.savez_compressed(path, **{k: v for k, v in pictures.items() if names is None or k in names})


def read_pictures(path: str | None) -> dict[str, np.ndarray]:
    """The training pictures of the installed packages, completed (or replaced, name by name) by those
    of an .npz written by save_pictures (for a machine that lacks a package, e.g. scikit-learn)."""
    pictures = load_pictures()
    if path and os.path.exists(path):
        with np.load(path) as data:  # (H, W, 3) arrays, or a file's encoded bytes (1-D uint8: a JPEG stays small)
            for k in data.files:
                a = data[k]  # each entry is read (and decompressed) once
                pictures[k] = a if a.ndim == 3 else picture_array(io.BytesIO(a.tobytes()))
    assert not set(pictures) & set(HELD_OUT), "a held-out picture slipped into training"
    return pictures


def source_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the picture a clip of `size` is rendered from: the frame plus the margin."""
    m = round(MARGIN * size[1] / 256)
    return size[0] + 2 * m, size[1] + 2 * m


def picture_bank(pictures: dict[str, np.ndarray], size: tuple[int, int], device) -> torch.Tensor:
    """Tiles of every picture, (P, 3, th, tw) in [0, 1] on `device`, th x tw = TILE_SCALE x the source
    size of clips of `size` (the model's (H, W)).

    Per picture: the whole picture (cropped to the tile's aspect), three crops of 60% of it, and the
    whole picture at half the tile's size, mirrored out to fill it: full views, details, and the
    dense detail of a large photo brought down to the model's size (as guard prepares a photo)."""
    hs, ws = source_size(size)
    th, tw = int(hs * TILE_SCALE), int(ws * TILE_SCALE)
    tiles = []
    for img in pictures.values():
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
        h, w = x.shape[-2:]
        for frac, (fy, fx) in ((1.0, (0.5, 0.5)), (0.6, (0.2, 0.3)), (0.6, (0.8, 0.5)), (0.6, (0.5, 0.8))):
            ch = min(h, w * th / tw) * frac
            cw = ch * tw / th
            top, left = int((h - ch) * fy), int((w - cw) * fx)
            crop = x[..., top : top + int(ch), left : left + int(cw)]
            tiles.append(F.interpolate(crop, size=(th, tw), mode="bicubic", antialias=True, align_corners=False))
        small = F.interpolate(tiles[-4], size=(th // 2, tw // 2), mode="bicubic", antialias=True, align_corners=False)
        tiles.append(F.pad(small.clamp(0, 1), (tw // 4, tw - tw // 2 - tw // 4, th // 4, th - th // 2 - th // 4), mode="reflect"))
    return torch.cat(tiles).clamp(0, 1).to(device)


def sharp_views(pictures: dict[str, np.ndarray], size: tuple[int, int], per_picture: int = 6, seed: int = 0) -> torch.Tensor:
    """Views of every picture as guard prepares a photo for the model: (N, 3, Hs, Ws) uint8 at the
    source size of clips of `size`, each resized once with Lanczos (PIL), so that a clip's frame 0
    is the view's centre pixel for pixel, as sharp as a prepared photo. (The bank's tiles reach a
    frame through two bilinear resamplings: softer than the prepared photos the model is judged on.)
    Per picture: the whole picture filling the frame, then details at 0.7 and 0.5 of its scale
    (never enlarged), at seeded positions; the margin is the picture mirrored out."""
    (H, W), (Hs, Ws) = size, source_size(size)
    rng = np.random.default_rng(seed)
    views = []
    for img in pictures.values():
        h, w = img.shape[:2]
        cover = min(h / H, w / W)  # picture pixels per frame pixel when the picture fills the frame
        pad = int(math.ceil(max(Hs - H, Ws - W) / 2 * cover)) + 2
        padded = PIL.Image.fromarray(np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
        for i in range(per_picture):
            d = max(min(1.0, cover), cover * (1.0, 1.0, 0.7, 0.7, 0.5, 0.5)[i % 6])
            cy, cx = (h / 2, w / 2) if i == 0 else (rng.uniform(H * d / 2, h - H * d / 2), rng.uniform(W * d / 2, w - W * d / 2))
            box = (pad + cx - Ws * d / 2, pad + cy - Hs * d / 2, pad + cx + Ws * d / 2, pad + cy + Hs * d / 2)
            views.append(np.asarray(padded.resize((Ws, Hs), PIL.Image.Resampling.LANCZOS, box=box)))
    return torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).contiguous()


def procedural_textures(n: int, size: tuple[int, int], generator: torch.Generator, device) -> torch.Tensor:
    """n random textures (n, 3, h, w) in [0, 1]: multi-octave smooth noise through a random periodic
    colour map, some multiplied by stripes or checkers; the octaves kept vary, so that both flat
    (still) and busy (moving) textures appear."""
    h, w = size
    out = torch.zeros(n, 3, h, w, device=device)
    top_octave = torch.randint(1, 6, (n, 1, 1, 1), generator=generator, device=device)  # 1 = smooth only
    for octave, cells in enumerate((4, 8, 16, 32, 64)):
        noise = torch.randn(n, 3, cells, cells, generator=generator, device=device)
        weight = torch.rand(n, 1, 1, 1, generator=generator, device=device) * 0.6**octave * 2 * (octave < top_octave)
        out += weight * F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    freq = 1 + 4 * torch.rand(n, 3, 1, 1, generator=generator, device=device)
    phase = 2 * math.pi * torch.rand(n, 3, 1, 1, generator=generator, device=device)
    tex = 0.5 + 0.45 * torch.sin(freq * out + phase)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=device), torch.linspace(-w / h, w / h, w, device=device), indexing="ij")
    angle = math.pi * torch.rand(n, 1, 1, generator=generator, device=device)
    k = 4 + 30 * torch.rand(n, 1, 1, generator=generator, device=device)
    u = torch.cos(angle) * xx + torch.sin(angle) * yy
    v = -torch.sin(angle) * xx + torch.cos(angle) * yy
    stripes = (torch.sin(k * u) > 0).float()
    checkers = ((torch.sin(k * u) > 0) ^ (torch.sin(k * v) > 0)).float()
    kind = torch.randint(0, 4, (n, 1, 1), generator=generator, device=device)
    pattern = torch.where(kind == 0, stripes, torch.where(kind == 1, checkers, torch.ones_like(stripes)))
    return (tex * (0.6 + 0.4 * pattern[:, None])).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect padding; sigma in px (a float, or (B,) per image)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    radius = int(math.ceil(3 * float(sigma.max())))
    if radius == 0:
        return x
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (r[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)  # (B or 1, K)
    k = k / k.sum(1, keepdim=True)
    B, C, H, W = x.shape
    k = k.expand(B, -1) if k.shape[0] == 1 else k
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = y.reshape(1, B * C, H + 2 * radius, W + 2 * radius)
    kw = k.repeat_interleave(C, 0)  # (B*C, K)
    y = F.conv2d(y, kw[:, None, None, :], groups=B * C)
    y = F.conv2d(y, kw[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def velocity_field(src: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
    """The law of this world: (B, 3, H, W) pictures in [0, 1] and (B,) speeds -> (B, 2, H, W)
    velocities in px/frame (x, y). Busy regions move, flat ones stay; the local colour's hue sets the
    direction (see the module docstring)."""
    lum = (src * torch.tensor([0.299, 0.587, 0.114], device=src.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    lum = gaussian_blur(lum, 1.0)  # contrast of structure, not of pixel noise
    mean = gaussian_blur(lum, 4.0)
    contrast = (gaussian_blur(lum**2, 4.0) - mean**2).clamp_min(0).sqrt()
    lo, hi = CONTRAST
    t = ((contrast - lo) / (hi - lo)).clamp(0, 1)
    mobility = gaussian_blur(t * t * (3 - 2 * t), 10.0)  # smooth step, then smooth in space
    r, g, b = src[:, 0:1], src[:, 1:2], src[:, 2:3]
    chroma = gaussian_blur(torch.cat([r - g, (r + g) / 2 - b], 1), 10.0)  # opponent colours (red-green, yellow-blue)
    chroma = chroma + torch.tensor([0.06, 0.0], device=src.device).view(1, 2, 1, 1)  # grey things drift right
    direction = chroma / chroma.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return speed.view(-1, 1, 1, 1) * mobility * direction


def _normalised(px: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates (..., 2) as (x, y) -> grid_sample's [-1, 1] (align_corners=False)."""
    h, w = size
    return torch.stack([(px[..., 0] + 0.5) / w * 2 - 1, (px[..., 1] + 0.5) / h * 2 - 1], -1)


def render(src: torch.Tensor, velocity: torch.Tensor, num_frames: int, size: tuple[int, int], iterations: int = 4) -> torch.Tensor:
    """Move every point of `src` along its own constant velocity: frame t shows the point p at
    p + t v(p). Rendered backward: for each output pixel y solve p = y - t v(p) (fixed point).
    src (B, 3, Hs, Ws), velocity (B, 2, Hs, Ws) -> (B, F, 3, H, W), the frame the centre H x W."""
    B, _, Hs, Ws = src.shape
    H, W = size
    top, left = (Hs - H) // 2, (Ws - W) // 2
    ys, xs = torch.meshgrid(torch.arange(H, device=src.device, dtype=src.dtype) + top,
                            torch.arange(W, device=src.device, dtype=src.dtype) + left, indexing="ij")
    y = torch.stack([xs, ys], -1)[None].expand(B, H, W, 2)  # (B, H, W, 2) source pixel coords of the frame
    frames = []
    for t in range(num_frames):
        p = y
        for _ in range(iterations if t else 0):
            v = F.grid_sample(velocity, _normalised(p, (Hs, Ws)), mode="bilinear", padding_mode="border", align_corners=False)
            p = y - t * v.permute(0, 2, 3, 1)
        frames.append(F.grid_sample(src, _normalised(p, (Hs, Ws)), mode="bilinear", padding_mode="border", align_corners=False))
    return torch.stack(frames, 1)


def bucket_of(velocity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """motion_bucket_id of each clip from its flow over the visible frame: the mean speed of the
    pixels that move (0 if under 1% of them move), FLOW_AT_BUCKET_255 px/frame -> 255."""
    H, W = size
    _, _, Hs, Ws = velocity.shape
    top, left = (Hs - H) // 2, (Ws - W) // 2
    speed = velocity[:, :, top : top + H, left : left + W].norm(dim=1).flatten(1)  # (B, H*W)
    moving = (speed >= MOVING).float()
    share = moving.mean(1)
    mean_moving = (speed * moving).sum(1) / moving.sum(1).clamp_min(1)
    mean_moving = torch.where(share >= 0.01, mean_moving, torch.zeros_like(mean_moving))
    return (mean_moving / FLOW_AT_BUCKET_255 * 255).round().clamp(0, 255)


class ClipRenderer:
    """Renders batches of clips (B, F, 3, H, W) in [-1, 1] with their motion buckets (B,).

    size: the model's (height, width); speed scales with the width (MAX_SPEED is at width 256).
    still: the share of clips drawn still (speed 0, bucket 0); flat and blurred pictures add to it.
    photo_share: the share of clips drawn from the photos rather than the procedural textures (None:
    every tile of the bank alike; the VAE stage draws more photos, train.py --vae-photo-share).
    views, sharp_share: sharp_views of the photos, and the share of clips drawn from them instead of
    the bank (train.py --sharp-share)."""

    def __init__(self, bank: torch.Tensor, size: tuple[int, int] = (192, 256), num_textures: int = 256, seed: int = 0,
                 still: float = 0.1, photo_share: float | None = None, views: torch.Tensor | None = None,
                 sharp_share: float = 0.0):
        self.device = bank.device
        self.still = still  # share of clips drawn at speed 0
        self.photo_share = photo_share  # share of clips drawn from the photos (None: uniform over photos and textures)
        self.size = size
        self.src_size = source_size(size)
        self.px_scale = size[1] / 256
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.photos = bank
        self.views = None if views is None else views.to(self.device)
        self.sharp_share = sharp_share
        self.num_textures = num_textures
        self.refresh_textures()

    def refresh_textures(self) -> None:
        """New procedural textures (the photos are fixed, the textures need not be)."""
        tex = procedural_textures(self.num_textures, tuple(self.photos.shape[-2:]), self.generator, self.device)
        self.bank = torch.cat([self.photos, tex])

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def tile_indices(self, B: int) -> torch.Tensor:
        """B indices into the bank: every tile alike, or (photo_share) a photo or a texture, then one of them evenly."""
        if self.photo_share is None:
            return torch.randint(0, len(self.bank), (B,), generator=self.generator, device=self.device)
        P, T = len(self.photos), len(self.bank) - len(self.photos)
        u = self._rand(B)  # in [0, 1): u * n is below n
        photo = self._rand(B) < self.photo_share
        return torch.where(photo, (u * P).long(), P + (u * T).long())

    def pictures(self, B: int) -> torch.Tensor:
        """B source pictures (B, 3, Hs, Ws) in [0, 1]: a random crop (60-100% of a tile, random
        position, flip), or (sharp_share) a sharp view as it is, flipped at random; then hue rotation,
        saturation, tint, gain and gamma; 15% of the crops blurred."""
        dev = self.device
        tiles = self.bank[self.tile_indices(B)]
        scale = 0.6 + 0.4 * self._rand(B)  # crop size as a fraction of the tile
        centre = (self._rand(B, 2) * 2 - 1) * (1 - scale[:, None])
        flip = torch.where(self._rand(B) < 0.5, -1.0, 1.0)
        theta = torch.zeros(B, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
        theta[:, :, 2] = centre
        grid = F.affine_grid(theta, (B, 3, *self.src_size), align_corners=False)
        img = F.grid_sample(tiles, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        sharp = torch.zeros(B, dtype=torch.bool, device=dev)
        if self.views is not None and self.sharp_share > 0:
            sharp = self._rand(B) < self.sharp_share
            view = self.views[(self._rand(B) * len(self.views)).long()].float().div(255)
            view = torch.where(flip[:, None, None, None] < 0, view.flip(-1), view)
            img = torch.where(sharp[:, None, None, None], view, img)
        # colour: rotate the hue and scale the saturation in the opponent plane, add a tint
        lum = img.mean(1, keepdim=True)
        c1, c2 = img[:, 0:1] - img[:, 1:2], (img[:, 0:1] + img[:, 1:2]) / 2 - img[:, 2:3]
        angle = 2 * math.pi * self._rand(B, 1, 1, 1)
        sat = 0.3 + 1.2 * self._rand(B, 1, 1, 1)
        tint = (self._rand(B, 2, 1, 1) - 0.5) * 0.3 * (self._rand(B, 1, 1, 1) < 0.4)
        d1 = sat * (torch.cos(angle) * c1 - torch.sin(angle) * c2) + tint[:, 0:1]
        d2 = sat * (torch.sin(angle) * c1 + torch.cos(angle) * c2) + tint[:, 1:2]
        # back to RGB: the inverse of (lum, c1, c2) = M rgb with lum the channel mean
        r = lum + d1 / 2 + d2 / 3
        g = lum - d1 / 2 + d2 / 3
        b = lum - 2 * d2 / 3
        img = torch.cat([r, g, b], 1)
        img = (img * (0.75 + 0.5 * self._rand(B, 1, 1, 1))).clamp(1e-3, 1) ** (0.75 + 0.5 * self._rand(B, 1, 1, 1))
        blurred = (self._rand(B) < 0.15) & ~sharp
        sigma = torch.where(blurred, 2.5 + 4 * self._rand(B), torch.zeros(B, device=dev))
        if blurred.any():
            img = torch.where(blurred[:, None, None, None], gaussian_blur(img, sigma.clamp_min(0.1)), img)
        return img.clamp(0, 1)

    @torch.no_grad()
    def __call__(self, batch_size: int, num_frames: int = 8):
        B = batch_size
        src = self.pictures(B)
        speed = MAX_SPEED * self.px_scale * (0.1 + 0.9 * self._rand(B)) * (self._rand(B) >= self.still)
        velocity = velocity_field(src, speed)
        video = render(src, velocity, num_frames, self.size)
        bucket = bucket_of(velocity / self.px_scale, self.size)
        return video.clamp(0, 1) * 2 - 1, bucket
