"""guard.report: the control, the 'posted online' transformation and the one-line verdict (no model)."""

import json
import math

import numpy as np
import pytest

from guard import report


def row(flow_ratio=1.0, psnr=40.0):
    return {"flow_ratio": flow_ratio, "disruption_psnr": psnr}


def test_control_spends_the_whole_budget_and_is_seeded():
    rng = np.random.default_rng(0)
    image = rng.integers(20, 236, size=(40, 50, 3), dtype=np.uint8)
    control = report.control_image(image, 8, seed=3)
    delta = control.astype(int) - image
    assert set(np.unique(delta)) == {-8, 8}  # every channel moved by exactly eps, both signs
    assert 0.45 < (delta > 0).mean() < 0.55
    assert np.array_equal(control, report.control_image(image, 8, seed=3))
    assert not np.array_equal(control, report.control_image(image, 8, seed=4))
    edge = report.control_image(np.full((4, 4, 3), 253, np.uint8), 8, seed=0)
    assert edge.max() == 255  # clipped to the valid range


def test_posted_is_downsized_and_jpeg_compressed():
    image = np.random.default_rng(1).integers(0, 256, size=(128, 96, 3), dtype=np.uint8)
    out = report.posted(image)
    assert out.shape == (96, 72, 3) and out.dtype == np.uint8
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
    guarded = report.control_image(original, 4, seed=1)
    control = report.control_image(original, 4, seed=2)
    still = np.repeat(original[None], 3, axis=0)
    videos = {"original": still, "guarded": still, "control": still}
    numbers = report.measure(original, guarded, control, videos, is_control=False)
    json.dumps(numbers, allow_nan=False)  # inf PSNR and nan ratios became null
    assert numbers["image"]["linf"] == 4 and numbers["video"]["flow_ratio"] is None
    assert numbers["verdict"]["kind"] == "none" and len(numbers["flows"]["control"]) == 2
    assert report.measure(original, guarded, None, None, is_control=True)["verdict"] is None
