"""What one result says, in one line: the guarded photo's video against a control, and after posting.

A result is judged against a **control**: the same photo plus random noise that spends the whole
budget (every pixel channel moved by exactly +eps or -eps levels, a random sign each: the `noise`
method, drawn with the protection's own seed, `guard.jobs`), animated with the same seed and settings
as the original and the guarded photo. It costs one more video. A protection is claimed only when the guarded photo's video differs from the
original's clearly more than the control's does:

- **frozen**: its video moves at least `FREEZE_MARGIN` (25%) less than the original's, and at least
  25 points less than the control's (flow ratios of one guarded image on the embedded model ranged
  0.88-1.19 over four video seeds, so smaller differences at one seed are within what seeds alone do);
- **changed**: its frames are at least `CHANGE_MARGIN_DB` (6 dB PSNR, twice the RMS difference)
  further from the original's video than both the control's frames are and the guarded photo itself
  is from the original photo (a video that only carries the perturbation along is not ruined).

Otherwise the verdict says plainly that there is no measurable protection at these settings. One
image and one seed: `python -m guard evaluate` measures many.

"Does it survive posting?" (`posted`): the photo downsized to `POSTING_SCALE` (0.75x, area averaging)
then saved as JPEG at `POSTING_QUALITY` (75), as a platform serves a posted photo. The original, the
guarded photo and the control are all posted the same way and animated again, and the guarded one is
judged against the posted original, so the numbers say what the protection still does, not what
JPEG alone does to a video.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from . import metrics

FREEZE_MARGIN = 0.25
CHANGE_MARGIN_DB = 6.0
POSTING_SCALE = 0.75
POSTING_QUALITY = 75
POSTING = f"downsized to {POSTING_SCALE:g}x and saved as JPEG at quality {POSTING_QUALITY}"


def posted(image: np.ndarray, scale: float = POSTING_SCALE, quality: int = POSTING_QUALITY) -> np.ndarray:
    """`image` (uint8 (H, W, 3)) as a platform serves it once posted: downsized to `scale` with area
    averaging, then JPEG-compressed at `quality` (Pillow, 4:2:0). Returns the smaller uint8 image."""
    image = np.asarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return metrics.jpeg(small, quality=quality)


@dataclass(frozen=True)
class Verdict:
    kind: str  # "frozen", "changed", "none" (no measurable protection) or "control" (the method is the control)
    sentence: str  # one line, plain text

    @property
    def protected(self) -> bool:
        return self.kind in ("frozen", "changed")


def _short(ratio: float) -> str:
    """A flow ratio as a change: "92% less", "6% more", "the same"."""
    if not math.isfinite(ratio):
        return "no motion to compare" if math.isnan(ratio) else "moves, the original's does not"
    change = round(100 * (1 - ratio))
    return "the same" if change == 0 else f"{abs(change)}% {'less' if change > 0 else 'more'}"


def _moves(ratio: float) -> str:
    """A flow ratio as a clause about a video: "moves 92% less than the original's"."""
    if math.isnan(ratio):
        return "does not move, and neither does the original's"
    if math.isinf(ratio):
        return "moves while the original's does not"
    short = _short(ratio)
    return "moves as much as the original's" if short == "the same" else f"moves {short} than the original's"


def _db(x: float) -> str:
    return "identical" if math.isinf(x) else f"{x:.1f} dB"


def verdict(guarded: dict, control: dict | None, photo_psnr: float, *, is_control: bool = False,
            prefix: str = "") -> Verdict:
    """The one-line verdict of a result.

    Args:
        guarded: `metrics.compare_videos(original video, guarded photo's video)`.
        control: `metrics.compare_videos(original video, control photo's video)`, or None when the
            method is the control itself (`is_control`).
        photo_psnr: PSNR of the guarded photo against the original photo (dB, `inf` if identical).
        prefix: words before the sentence (e.g. "After posting: ").
    """
    moves = _moves(guarded["flow_ratio"])
    if is_control or control is None:
        return Verdict("control", f"{prefix}This is the control (random noise, nothing optimised): its video "
                                  f"{moves}. A protection must do clearly better than this.")
    control_moves = _short(control["flow_ratio"])
    less, control_less = 1 - guarded["flow_ratio"], 1 - control["flow_ratio"]
    if (math.isfinite(less) and less >= FREEZE_MARGIN
            and (not math.isfinite(control_less) or less - control_less >= FREEZE_MARGIN)):
        return Verdict("frozen", f"{prefix}Protected (motion suppressed): the guarded photo's video {moves} "
                                 f"(noise of the same budget: {control_moves}).")
    video_psnr, control_psnr = guarded["disruption_psnr"], control["disruption_psnr"]
    if video_psnr <= min(control_psnr, photo_psnr) - CHANGE_MARGIN_DB:
        return Verdict("changed", f"{prefix}Protected (video changed): the guarded photo's video is {_db(video_psnr)} "
                                  f"PSNR from the original's, much further than the video of noise of the same budget "
                                  f"({_db(control_psnr)}) and than the photo itself changed ({_db(photo_psnr)}).")
    if video_psnr > photo_psnr - CHANGE_MARGIN_DB:
        difference = f"no more than the photo's own change explains ({_db(video_psnr)} vs {_db(photo_psnr)} PSNR)"
    else:
        difference = f"no more than the noise's video does ({_db(video_psnr)} vs {_db(control_psnr)} PSNR)"
    return Verdict("none", f"{prefix}No measurable protection on this model at these settings: the guarded photo's "
                           f"video {moves} (noise of the same budget: {control_moves}) "
                           f"and differs from it {difference}.")


def json_safe(value):
    """`value` with numpy scalars as Python numbers and non-finite floats (inf PSNR, nan ratios) as
    None, so that it is valid JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def measure(original: np.ndarray, guarded: np.ndarray, control: np.ndarray | None, videos: dict | None,
            is_control: bool, prefix: str = "") -> dict:
    """The numbers of one result, JSON-safe (`json_safe`): "image" (`metrics.imperceptibility` of the
    guarded photo), "control" ({"image", "video"} of the control photo, or None), and with `videos`
    (uint8 frames by name: "original", "guarded" and, with a control, "control"): "video"
    (`metrics.compare_videos` of the guarded photo's video), "flows" (optical flow per frame of each
    video) and "verdict" ({"kind", "sentence"} of `verdict`). All photos are uint8 (H, W, 3) of one size."""
    numbers = {"image": metrics.imperceptibility(original, guarded), "video": None, "control": None,
               "flows": None, "verdict": None}
    if control is not None:
        numbers["control"] = {"image": metrics.imperceptibility(original, control), "video": None}
    if videos:
        numbers["video"] = metrics.compare_videos(videos["original"], videos["guarded"])
        numbers["flows"] = {name: metrics.flow_per_frame(frames).tolist() for name, frames in videos.items()}
        if control is not None:
            numbers["control"]["video"] = metrics.compare_videos(videos["original"], videos["control"])
        result = verdict(numbers["video"], numbers["control"]["video"] if control is not None else None,
                         numbers["image"]["psnr"], is_control=is_control, prefix=prefix)
        numbers["verdict"] = dataclasses.asdict(result)
    return json_safe(numbers)
