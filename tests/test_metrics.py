"""Known-answer tests of guard.metrics on small synthetic images and videos (CPU, < 1 s each)."""

import math

import cv2
import numpy as np
import pytest

from guard import metrics


def smooth_texture(size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (size, size, 3): blurred noise, stretched to 0..255; smooth enough for optical flow."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2.0)
    t = (t - t.min()) / (t.max() - t.min())
    return np.round(t * 255).astype(np.uint8)


def shifting_video(dx: int, dy: int = 0, frames: int = 4, seed: int = 0) -> np.ndarray:
    """uint8 (F, 64, 64, 3): the texture rolled by (dx, dy) more pixels at each frame."""
    img = smooth_texture(seed=seed)
    return np.stack([np.roll(img, (dy * i, dx * i), axis=(0, 1)) for i in range(frames)])


def static_video(frames: int = 4) -> np.ndarray:
    return np.stack([smooth_texture()] * frames)


# --- imperceptibility -------------------------------------------------------------------------------


def test_psnr_of_uniform_error_matches_formula():
    rng = np.random.default_rng(1)
    original = rng.integers(0, 250, (32, 32, 3), dtype=np.uint8)
    guarded = original + np.uint8(3)  # every channel off by 3 levels: mse = 9
    result = metrics.imperceptibility(original, guarded)
    assert result["psnr"] == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-6)  # 38.588 dB
    assert result["linf"] == 3
    assert result["l2"] == pytest.approx(math.sqrt(32 * 32 * 3 * 9) / 255)


def test_identical_images_have_inf_psnr_ssim_one_and_print():
    img = smooth_texture()
    result = metrics.imperceptibility(img, img.copy())
    assert result["psnr"] == float("inf")
    assert result["ssim"] == pytest.approx(1.0)
    assert result["linf"] == 0 and result["l2"] == 0.0
    assert f"{result['psnr']:.2f} dB" == "inf dB"


def test_linf_counts_levels_as_int():
    original = smooth_texture()
    guarded = original.astype(np.int16)
    guarded[3, 4, 0] += 5 if guarded[3, 4, 0] < 250 else -5
    guarded[10, 20, 2] += -7 if guarded[10, 20, 2] >= 7 else 7
    result = metrics.imperceptibility(original, guarded.astype(np.uint8))
    assert result["linf"] == 7 and isinstance(result["linf"], int)
    assert result["l2"] == pytest.approx(math.sqrt(5**2 + 7**2) / 255)
    assert 0.99 < result["ssim"] < 1.0


def test_ssim_drops_with_noise():
    img = smooth_texture()
    noisy = np.clip(img.astype(np.int16) + np.random.default_rng(2).integers(-40, 41, img.shape), 0, 255)
    assert metrics.imperceptibility(img, noisy.astype(np.uint8))["ssim"] < 0.8


def test_float_input_in_unit_range_measures_like_uint8():
    img = smooth_texture()
    other = smooth_texture(seed=1)
    as_uint8 = metrics.imperceptibility(img, other)
    as_float = metrics.imperceptibility(img / 255.0, other.astype(np.float32) / 255.0)
    assert as_float == pytest.approx(as_uint8)


# --- motion -----------------------------------------------------------------------------------------


def test_static_video_has_zero_flow_and_zero_change():
    video = static_video()
    np.testing.assert_array_equal(metrics.flow_per_frame(video), np.zeros(3))
    np.testing.assert_allclose(metrics.temporal_change_per_frame(video), np.zeros(3), atol=1e-12)
    assert metrics.motion(video) == pytest.approx(dict(flow=0.0, temporal_change=0.0), abs=1e-12)


@pytest.mark.parametrize(
    "dx, dy, expected",
    [
        (2, 0, 2.0),
        (-2, 0, 2.0),
        (3, 4, 5.0),  # magnitude, not |dx| + |dy| (7) or max (4)
    ],
)
def test_shifted_texture_flow_matches_shift(dx, dy, expected):
    flow = metrics.flow_per_frame(shifting_video(dx, dy))
    assert flow.shape == (3,)
    # measured: within 0.03 px of the shift; 0.1 px rejects a per-pair off-by-one or a sum over pairs
    np.testing.assert_allclose(flow, expected, atol=0.1)


def test_temporal_change_grows_with_shift():
    one = metrics.temporal_change_per_frame(shifting_video(1))
    three = metrics.temporal_change_per_frame(shifting_video(3))
    assert one.shape == three.shape == (3,)
    assert np.all(one > 0.01) and np.all(three > one)


# --- disruption and comparison ---------------------------------------------------------------------


def test_disruption_of_identical_videos_is_inf_psnr_and_ssim_one():
    video = shifting_video(2)
    d = metrics.disruption(video, video.copy())
    assert d["psnr_per_frame"].shape == d["ssim_per_frame"].shape == (4,)
    assert np.all(np.isinf(d["psnr_per_frame"])) and d["psnr"] == float("inf")
    np.testing.assert_allclose(d["ssim_per_frame"], 1.0)
    assert d["ssim"] == pytest.approx(1.0)


def test_disruption_per_frame_known_error():
    a = np.full((3, 16, 16, 3), 100, dtype=np.uint8)
    b = a.copy()
    b[1] += 3  # mse 9 on frame 1
    b[2] += 10  # mse 100 on frame 2
    d = metrics.disruption(a, b)
    expected = [float("inf"), 10 * math.log10(255**2 / 9), 10 * math.log10(255**2 / 100)]
    np.testing.assert_allclose(d["psnr_per_frame"], expected)
    assert d["psnr"] == float("inf")  # the mean of per-frame PSNR, as documented


def test_compare_videos_ratios():
    row = metrics.compare_videos(shifting_video(2), shifting_video(1))
    assert row["flow_original"] == pytest.approx(2.0, abs=0.1)
    assert row["flow_guarded"] == pytest.approx(1.0, abs=0.1)
    assert row["flow_ratio"] == pytest.approx(row["flow_guarded"] / row["flow_original"])
    assert row["flow_ratio"] == pytest.approx(0.5, abs=0.05)
    assert 0 < row["change_ratio"] < 1
    assert row["disruption_psnr"] == float("inf")  # frame 0 is the same texture in both
    assert all(isinstance(v, float) for v in row.values())


def test_compare_videos_frozen_guarded_and_zero_denominators():
    moving, frozen = shifting_video(2), static_video()
    row = metrics.compare_videos(moving, frozen)
    assert row["flow_ratio"] == 0.0 and row["change_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert 0 < row["disruption_ssim"] < 1
    row = metrics.compare_videos(frozen, moving)
    assert row["flow_ratio"] == float("inf")  # original did not move, guarded does
    row = metrics.compare_videos(frozen, frozen.copy())
    assert math.isnan(row["flow_ratio"])  # 0 / 0: both frozen
    assert metrics.ratio(1.0, 4.0) == 0.25


# --- "posted online" transformations ---------------------------------------------------------------


def test_jpeg_changes_image_keeps_shape_dtype_and_is_deterministic():
    img = smooth_texture()
    out = metrics.jpeg(img, quality=75)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    np.testing.assert_array_equal(out, metrics.jpeg(img, quality=75))
    low, high = metrics.jpeg(img, quality=10), metrics.jpeg(img, quality=95)
    assert metrics.psnr(img, low) < metrics.psnr(img, high)


def test_mismatched_shapes_raise_value_error_naming_arguments():
    img = smooth_texture()
    with pytest.raises(ValueError, match=r"`original` and `guarded`.*\(64, 64, 3\) and \(32, 32, 3\)"):
        metrics.imperceptibility(img, img[:32, :32])
    with pytest.raises(ValueError, match=r"`video_a` and `video_b`.*\(4, 64, 64, 3\) and \(3, 64, 64, 3\)"):
        metrics.disruption(static_video(4), static_video(3))
    with pytest.raises(ValueError, match="`original_video` and `guarded_video`"):
        metrics.compare_videos(static_video(4), static_video(3))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.imperceptibility(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)),
         r"`original` must have shape \(H, W, 3\), got shape \(8, 8\)"),
        (lambda: metrics.flow_per_frame(np.zeros((8, 8, 3), np.uint8)),
         r"`video` must have shape \(F, H, W, 3\), got shape \(8, 8, 3\)"),
        (lambda: metrics.temporal_change_per_frame(np.zeros((1, 8, 8, 3), np.uint8)),
         r"`video` needs at least 2 frames.*\(1, 8, 8, 3\)"),
        (lambda: metrics.jpeg(np.full((8, 8, 3), 2.0)), r"`image` is a float array.*\[0, 1\]"),
        (lambda: metrics.jpeg(np.zeros((8, 8, 3), np.int32)), r"`image` must be uint8.*int32"),
        (lambda: metrics.jpeg(np.zeros((8, 8, 3), np.uint8), quality=0), r"`quality`.*got 0"),
    ],
)
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
