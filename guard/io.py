"""Reading images a person gives us, writing 8-bit PNGs and browser-playable videos.

Every problem a user can cause becomes `InputError` with one sentence naming the problem; the CLI
prints it and the app shows it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

logger = logging.getLogger(__name__)

#: images above this many pixels are refused before decoding (decompression bombs)
MAX_PIXELS = 64_000_000
#: images smaller than this on either side cannot carry a protection worth the name
MIN_SIDE = 32
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
#: the only formats opened (PIL knows many more, some through external programs: EPS runs Ghostscript);
#: "JPEG" also opens MPO, the JPEG variant many cameras and phones write
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
#: modes whose colours are RGB: an ICC profile read with them describes the RGB pixels we write
RGB_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA")
#: how conversion notices name image modes ("I;16" means nothing to most people)
MODE_NAMES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer", "F": "floating-point",
              "L": "grayscale", "LA": "grayscale", "1": "black-and-white"}


class InputError(ValueError):
    """A problem with what the user gave us, phrased for the user."""


def load_image(source: str | os.PathLike | PIL.Image.Image,
               max_side: int | None = None) -> tuple[PIL.Image.Image, list[str]]:
    """Open an image as 8-bit RGB, upright. Returns (image, notices): notices say what was changed
    (EXIF rotation applied, alpha flattened on white, first frame of an animation taken, shrunk, ...).

    The image keeps its size and, when its colours are RGB (modes RGB, RGBA, P ...), its ICC colour
    profile in `image.info["icc_profile"]`, which `save_png` writes with the guarded pixels; the
    profile of a grayscale or CMYK image does not describe RGB pixels and is left out (a notice says
    so). Other metadata (EXIF: camera, place) is not carried over. With `max_side`, an image longer
    than that on a side is shrunk to fit (Lanczos, aspect kept), with a notice: the app and the
    command line pass `guard.limits.MAX_SIDE`. A grayscale photo (stored as grayscale, or as RGB with
    equal channels) gets a notice that it stays grayscale (`keep_gray`, `save_png`). Every sentence
    about the photo's size names the size it was given at."""
    notices: list[str] = []
    if isinstance(source, PIL.Image.Image):
        image, name = source, "the image"
    else:
        path = Path(source)
        name = path.name
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not an image")
        try:
            image = PIL.Image.open(path, formats=IMAGE_FORMATS)
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"{name}: {image.width}x{image.height} is too large "
                                 f"(at most {MAX_PIXELS // 1_000_000} megapixels)")
            image.load()
        except InputError:
            raise
        except (PIL.Image.DecompressionBombError, PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InputError(f"{name}: not a readable image (the file is damaged or not one of PNG, JPEG, WebP, "
                             "BMP, TIFF, GIF)") from None
    if image.width * image.height > MAX_PIXELS:
        raise InputError(f"{name}: {image.width}x{image.height} is too large "
                         f"(at most {MAX_PIXELS // 1_000_000} megapixels)")
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        notices.append(f"{name} is animated: its first frame was used")
    exif_orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
    if exif_orientation not in (None, 1):
        image = PIL.ImageOps.exif_transpose(image)
        notices.append(f"{name}: rotated upright as its EXIF orientation says")
    profile, mode = image.info.get("icc_profile"), image.mode
    image = _to_rgb8(image, name, notices)
    if profile and mode in RGB_MODES:
        image.info["icc_profile"] = profile
    else:
        image.info.pop("icc_profile", None)
        if profile:
            notices.append(f"{name}: its colour profile is for {MODE_NAMES.get(mode, mode)} pixels and was left out "
                           "of the RGB image")
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name}: {width}x{height} is too small (at least {MIN_SIDE} px a side)")
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), PIL.Image.Resampling.LANCZOS)
        if min(image.size) < MIN_SIDE:
            raise InputError(f"{name}: {width}x{height} is too narrow: shrunk to {max_side} px on its longer side it "
                             f"would be {image.width}x{image.height} (at least {MIN_SIDE} px a side)")
        notices.append(f"{name}: {width}x{height} is larger than {max_side} px on a side: shrunk to "
                       f"{image.width}x{image.height} first (the guarded image has this size)")
    if is_grayscale(image):
        notices.append(f"{name} is a black-and-white (grayscale) photo: it is guarded in gray, and the guarded image "
                       "stays grayscale")
    return image, notices


def is_grayscale(image: PIL.Image.Image | np.ndarray) -> bool:
    """Whether an image is gray: mode L, or every pixel's channels equal (uint8 (H, W) or (H, W, 3))."""
    array = np.asarray(image)
    return array.ndim == 2 or bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())


def keep_gray(original: PIL.Image.Image, guarded: PIL.Image.Image) -> PIL.Image.Image:
    """`guarded` kept gray when `original` is (`is_grayscale`): each pixel's change projected onto equal
    channels (the three channels replaced by their mean, rounded), so that a black-and-white photo comes
    back black and white; else `guarded` itself.

    The bound holds: the mean of three changes within [-eps, eps] is within it, and rounding it moves
    the pixel toward the original's whole level at most. Both 8-bit RGB of one size; the result is RGB
    with equal channels (as every other photo in guard's chain) with `guarded`'s info (its ICC profile);
    `save_png` writes it as a grayscale PNG."""
    if not is_grayscale(original):
        return guarded
    pixels = np.asarray(guarded.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    gray = np.clip(pixels.mean(axis=-1), 0, 255).round().astype(np.uint8)  # (H, W)
    kept = PIL.Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    kept.info.update(guarded.info)
    return kept


def _to_rgb8(image: PIL.Image.Image, name: str, notices: list[str]) -> PIL.Image.Image:
    mode = image.mode
    if mode.startswith("I") or mode.startswith("F"):  # 16/32-bit integer or float grayscale: scale to 8 bits
        # by the mode's range, never by the content (a dark 16-bit image stays dark): integers are
        # 16-bit samples (0..65535; PIL opens 16-bit PNG and TIFF as I;16 or I), floats are in [0, 1]
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if mode.startswith("F") else 255.0 / 65535.0
        array = np.clip(np.nan_to_num(array * scale), 0, 255).round().astype(np.uint8)
        notices.append(f"{name}: {MODE_NAMES.get(mode, mode)} image converted to 8 bits")
        return PIL.Image.fromarray(array, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notices.append(f"{name}: transparency flattened onto white")
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notices.append(f"{name}: CMYK converted to RGB")
    return image.convert("RGB")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Files in a folder with an image suffix, sorted (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def save_png(image: PIL.Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Lossless 8-bit PNG: the saved pixels are exactly the given ones, with the image's ICC profile
    (`image.info["icc_profile"]`, as `load_image` keeps it) when it has one. An RGB image whose channels
    are all equal and that has no profile (an RGB profile does not describe gray pixels) is written as a
    grayscale PNG: the same pixels, read back as RGB, and a black-and-white photo stays one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    if image.mode == "RGB" and not image.info.get("icc_profile") and is_grayscale(image):
        image = image.getchannel(0)
    image.save(path, format="PNG")
    return path


def save_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 7) -> Path:
    """Write uint8 frames (F, H, W, 3) as H.264 yuv420p mp4 (plays in every browser).

    Sides are padded to even sizes, which yuv420p needs."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=1, output_params=["-movflags", "+faststart", "-crf", "12"],
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode a video file to uint8 frames (F, H, W, 3)."""
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([np.asarray(frame) for frame in reader])
