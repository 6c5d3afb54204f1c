"""Measurements shared by the CLI, the app's numbers panel and `python -m guard evaluate`.

Three questions, one function family each:
- imperceptibility: how visible is the perturbation on the photo? (`imperceptibility`)
- motion: how much does a generated video move? (`flow_per_frame`, `temporal_change_per_frame`,
  `motion`)
- disruption: how far is the video made from the guarded photo from the one made from the original?
  (`disruption`, and `compare_videos`, which gives a flat table row of all of it)
plus `jpeg`, the compression step of the "posted online" transformation (`guard.report.posted`).

Input contract (unlike the float tensors of `guard.targets`, these are what gets saved and shown):
- an image is a uint8 array (H, W, 3), RGB, values 0..255;
- a video is a uint8 array (F, H, W, 3), RGB, values 0..255.
A float array in [0, 1] is also accepted and rounded to the nearest of the 256 levels first, so every
number below is measured on what an 8-bit PNG or mp4 would hold.

Units: PSNR in dB with a peak of 255; SSIM in [-1, 1] (1 = identical); L-inf in levels of 1/255 (an
int); L2 in [0, 1] units (the Euclidean norm of the difference divided by 255); optical flow in pixels
per frame. Identical inputs have PSNR `float("inf")`, which prints as "inf" (also through
`f"{x:.2f}"`); `json.dumps` writes it as `Infinity`.

Only numpy, OpenCV, scikit-image and Pillow are used: OpenCV computes the optical flow, the colour
conversion and the resizing, scikit-image PSNR and SSIM, Pillow the JPEG round trip.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import PIL.Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# Farneback parameters: the values of the OpenCV optical-flow tutorial (pyramid halving at each of 3
# levels, 15x15 averaging window, 3 iterations per level, 5x5 polynomial neighbourhood with the
# sigma=1.2 that OpenCV recommends for poly_n=5). The 3-level pyramid with a 15 px window follows
# motions of a few tens of pixels per frame, more than generated videos show.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)

# SSIM as in Wang et al. 2004 (Gaussian window, sigma 1.5, population covariance), the setting most
# papers' SSIM numbers use; scikit-image's default is a 7x7 uniform window instead.
SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


# ---------------------------------------------------------------------------------------------------
# input checks


def _as_uint8(name: str, x: np.ndarray, ndim: int) -> np.ndarray:
    """Checks that `x` is an RGB image (ndim 3) or video (ndim 4) and returns it as uint8."""
    x = np.asarray(x)
    expected = "(H, W, 3)" if ndim == 3 else "(F, H, W, 3)"
    if x.ndim != ndim or x.shape[-1] != 3:
        raise ValueError(f"`{name}` must have shape {expected}, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0 or np.isnan(x).any()):
            raise ValueError(
                f"`{name}` is a float array, so its values must be in [0, 1], "
                f"got range [{np.nanmin(x)}, {np.nanmax(x)}] (nan present: {bool(np.isnan(x).any())})"
            )
        return np.round(x * 255.0).astype(np.uint8)
    raise ValueError(f"`{name}` must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")


def _same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same shape, got {a.shape} and {b.shape}")


def _check_frames(name: str, video: np.ndarray) -> None:
    if video.shape[0] < 2:
        raise ValueError(f"`{name}` needs at least 2 frames to measure motion, got shape {video.shape}")


# ---------------------------------------------------------------------------------------------------
# image pairs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (peak 255); `inf` when identical."""
    if np.array_equal(a, b):
        return float("inf")  # skimage would divide by zero (with a RuntimeWarning) to get the same
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM in [-1, 1] between two uint8 RGB images (per channel, averaged; settings in `SSIM`)."""
    return float(structural_similarity(a, b, channel_axis=-1, **SSIM))


def imperceptibility(original: np.ndarray, guarded: np.ndarray) -> dict[str, float | int]:
    """How visible the perturbation is: compares the guarded photo with the original.

    Args:
        original, guarded: images (H, W, 3), uint8 or float in [0, 1], same shape.

    Returns:
        psnr: dB, `inf` when the images are identical (higher = less visible).
        ssim: in [-1, 1], 1 when identical.
        linf: the largest change of any pixel channel, in levels of 1/255 (an int; eps=8/255 gives <= 8).
        l2: Euclidean norm of the difference in [0, 1] units (grows with the image size).
    """
    original = _as_uint8("original", original, ndim=3)
    guarded = _as_uint8("guarded", guarded, ndim=3)
    _same_shape("original", original, "guarded", guarded)
    diff = guarded.astype(np.int16) - original.astype(np.int16)  # (H, W, 3) in -255..255
    return dict(
        psnr=psnr(original, guarded),
        ssim=ssim(original, guarded),
        linf=int(np.abs(diff).max()),
        l2=float(np.linalg.norm(diff / 255.0)),
    )


# ---------------------------------------------------------------------------------------------------
# motion of one video


def flow_per_frame(video: np.ndarray) -> np.ndarray:
    """Mean optical-flow magnitude between consecutive frames, in pixels per frame.

    Dense Farneback flow (`cv2.calcOpticalFlowFarneback` with the parameters in `FARNEBACK`) from frame
    i to frame i+1 on the grayscale frames; the magnitude of each pixel's (dx, dy) is averaged over the
    frame. Identical consecutive frames give exactly 0 (Farneback itself is skipped for them).

    Args:
        video: (F, H, W, 3), uint8 or float in [0, 1], F >= 2.

    Returns:
        float64 array (F-1,).
    """
    video = _as_uint8("video", video, ndim=4)
    _check_frames("video", video)
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video]  # F x (H, W)
    out = np.empty(len(gray) - 1, dtype=np.float64)
    for i, (prev, nxt) in enumerate(zip(gray[:-1], gray[1:])):
        if np.array_equal(prev, nxt):
            # Farneback reports up to ~0.1 px of spurious flow on identical textured frames; a repeated
            # frame did not move, and a frozen video must read exactly 0 (so that ratios to it are clear).
            out[i] = 0.0
            continue
        flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)  # (H, W, 2): dx, dy
        out[i] = np.hypot(flow[..., 0], flow[..., 1]).mean()
    return out


def temporal_change_per_frame(video: np.ndarray) -> np.ndarray:
    """1 - SSIM between consecutive frames, in [0, 2] (0 = the frame did not change).

    Catches change that optical flow misses: flicker, noise, a scene dissolving into texture.

    Args:
        video: (F, H, W, 3), uint8 or float in [0, 1], F >= 2.

    Returns:
        float64 array (F-1,).
    """
    video = _as_uint8("video", video, ndim=4)
    _check_frames("video", video)
    return np.array([1.0 - ssim(prev, nxt) for prev, nxt in zip(video[:-1], video[1:])], dtype=np.float64)


def motion(video: np.ndarray) -> dict[str, float]:
    """How much a video moves: flow (mean px/frame) and temporal_change (mean 1 - SSIM) over frames."""
    return dict(
        flow=float(flow_per_frame(video).mean()),
        temporal_change=float(temporal_change_per_frame(video).mean()),
    )


# ---------------------------------------------------------------------------------------------------
# two videos


def disruption(video_a: np.ndarray, video_b: np.ndarray) -> dict[str, np.ndarray | float]:
    """Frame-by-frame distance between two videos of the same shape (e.g. from original vs guarded).

    Args:
        video_a, video_b: (F, H, W, 3), uint8 or float in [0, 1], same shape.

    Returns:
        psnr_per_frame: float64 (F,), dB, `inf` for identical frames.
        ssim_per_frame: float64 (F,), in [-1, 1].
        psnr: mean of psnr_per_frame in dB (so `inf` if any frame pair is identical).
        ssim: mean of ssim_per_frame.
    """
    video_a = _as_uint8("video_a", video_a, ndim=4)
    video_b = _as_uint8("video_b", video_b, ndim=4)
    _same_shape("video_a", video_a, "video_b", video_b)
    psnrs = np.array([psnr(a, b) for a, b in zip(video_a, video_b)], dtype=np.float64)
    ssims = np.array([ssim(a, b) for a, b in zip(video_a, video_b)], dtype=np.float64)
    return dict(psnr_per_frame=psnrs, ssim_per_frame=ssims, psnr=float(psnrs.mean()), ssim=float(ssims.mean()))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with a zero denominator made explicit.

    0 / 0 is `nan` (two frozen videos: no ratio to speak of), x / 0 with x > 0 is `inf`.
    """
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return float(numerator / denominator)


def compare_videos(original_video: np.ndarray, guarded_video: np.ndarray) -> dict[str, float]:
    """One table row: the motion of each video, their ratios and how far apart they are.

    Args:
        original_video: (F, H, W, 3) generated from the original photo.
        guarded_video: (F, H, W, 3) generated from the guarded photo with the same seed and settings.

    Returns (all floats):
        flow_original, flow_guarded: mean optical flow, px/frame.
        change_original, change_guarded: mean 1 - SSIM between consecutive frames.
        flow_ratio, change_ratio: guarded / original (< 1: the guarded video moves less, i.e. frozen);
            `nan` when both are 0, `inf` when only the original is 0 (see `ratio`).
        disruption_psnr (dB), disruption_ssim: mean per-frame PSNR / SSIM of guarded vs original
            (lower = the guarded video is further from the original one, i.e. ruined).
    """
    original_video = _as_uint8("original_video", original_video, ndim=4)
    guarded_video = _as_uint8("guarded_video", guarded_video, ndim=4)
    _same_shape("original_video", original_video, "guarded_video", guarded_video)
    m_orig, m_guard = motion(original_video), motion(guarded_video)
    d = disruption(original_video, guarded_video)
    return dict(
        flow_original=m_orig["flow"],
        flow_guarded=m_guard["flow"],
        flow_ratio=ratio(m_guard["flow"], m_orig["flow"]),
        change_original=m_orig["temporal_change"],
        change_guarded=m_guard["temporal_change"],
        change_ratio=ratio(m_guard["temporal_change"], m_orig["temporal_change"]),
        disruption_psnr=d["psnr"],
        disruption_ssim=d["ssim"],
    )


# ---------------------------------------------------------------------------------------------------
# "posted online" transformations (robustness rows)


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    """JPEG-compresses and decodes an image in memory (Pillow, 4:2:0 chroma, deterministic).

    Args:
        image: (H, W, 3), uint8 or float in [0, 1].
        quality: JPEG quality, an int in [1, 95] (Pillow's useful range; 75 is Pillow's default).

    Returns:
        uint8 (H, W, 3).
    """
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 95:
        raise ValueError(f"`quality` must be an int in [1, 95], got {quality!r}")
    image = _as_uint8("image", image, ndim=3)
    buffer = io.BytesIO()
    PIL.Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=int(quality), subsampling="4:2:0")
    buffer.seek(0)
    with PIL.Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()
