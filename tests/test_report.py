"""guard.report: the 'posted online' transformation and the one-line verdict (no model)."""

import json
import math

import cv2
import numpy as np
import pytest

from guard import report


def row(flow_ratio=1.0, psnr=40.0):
    return {"flow_ratio": flow_ratio, "disruption_psnr": psnr}


def test_posted_is_downsized_and_jpeg_compressed():
    """The one posting transform: area-averaged to 0.75x (rounded sizes), then JPEG at quality 75. Each
    part is checked by what it does, so a posting that skipped one of them fails."""
    y, x = np.mgrid[0:128, 0:96]
    image = np.stack([x * 2, y * 2, (x + y) % 256], axis=-1).astype(np.uint8)  # smooth: JPEG keeps it close
    out = report.posted(image)
    assert out.shape == (96, 72, 3) and out.dtype == np.uint8
    assert report.posted(image[:, :95]).shape == (96, 71, 3)  # round(95 * 0.75) = 71
    resized = cv2.resize(image, (72, 96), interpolation=cv2.INTER_AREA)
    error = np.abs(out.astype(int) - resized).mean()
    assert 0.2 < error < 4, error  # lossy, but the same picture
    assert np.abs(report.posted(image, quality=95).astype(int) - resized).mean() < 0.8 * error  # quality is used
    assert "0.75x" in report.POSTING and "quality 75" in report.POSTING


@pytest.mark.parametrize("guarded, control, kind, words", [
    (row(0.08), row(0.99), "frozen", "moves 92% less than the original's (noise of the same budget: 1% less)"),
    (row(0.70), row(0.99), "frozen", "moves 30% less"),
    (row(0.80), row(0.99), "none", "moves 20% less"),  # within what seeds alone do
    (row(0.50), row(0.70), "none", "moves 50% less"),  # no better than the control by the margin
    (row(1.06, 33.0), row(0.99, 45.0), "none", "moves 6% more than the original's"),
    (row(1.0, 14.0), row(1.0, 40.0), "changed", "14.0 dB PSNR from the original's"),
    (row(1.0, 23.8), row(1.0, 43.0), "none", "no more than the photo's own change explains"),  # I2VGuard's picture
    (row(1.0, 14.0), row(1.0, 16.0), "none", "no more than the noise's video does"),
])
def test_verdict_claims_only_what_beats_the_control(guarded, control, kind, words):
    verdict = report.verdict(guarded, control, photo_psnr=24.4)
    assert verdict.kind == kind, verdict.sentence
    assert words in verdict.sentence
    assert verdict.protected == (kind in ("frozen", "changed"))
    if kind == "none":
        assert verdict.sentence.startswith("No measurable protection on this model at these settings")
    assert "\n" not in verdict.sentence


def test_verdict_of_the_control_itself_and_of_still_videos():
    assert report.verdict(row(0.99), None, 35.0, is_control=True).kind == "control"
    still = report.verdict(row(math.nan, math.inf), row(1.0, 50.0), 35.0, prefix="After posting: ")
    assert still.sentence.startswith("After posting: ") and "does not move" in still.sentence


def test_measure_is_json_safe_and_judges():
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    signs = rng.choice([-4, 4], size=(2, *original.shape))
    guarded, control = (np.clip(original + s, 0, 255).astype(np.uint8) for s in signs)
    still = np.repeat(original[None], 3, axis=0)
    videos = {"original": still, "guarded": still, "control": still}
    numbers = report.measure(original, guarded, control, videos, is_control=False)
    json.dumps(numbers, allow_nan=False)  # inf PSNR and nan ratios became null
    assert numbers["image"]["linf"] == 4 and numbers["video"]["flow_ratio"] is None
    assert numbers["verdict"]["kind"] == "none" and len(numbers["flows"]["control"]) == 2
    assert report.measure(original, guarded, None, None, is_control=True)["verdict"] is None
