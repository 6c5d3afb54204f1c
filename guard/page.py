"""What the page shows of a result, shared by the app and the example cache: the numbers as a table, the
verdict line, the motion plot, the change made visible, the settings that redo a result, the files a
result is handed out as, and what the page says while a job runs (with the small scripts the page runs
in the browser). Nothing here runs a model.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import matplotlib
import matplotlib.figure
import matplotlib.ticker
import numpy as np
import PIL.Image
import PIL.ImageDraw

from . import io as gio
from . import report
from .jobs import CONTROL, Job, Result, VideoOptions
from .optimize import Protection

#: the perturbation view: the whole change fits in DISPLAY_SIDE px, beside a CROP_SIDE px crop at 100%
DISPLAY_SIDE, CROP_SIDE, GUTTER = 768, 256, 8


def perturbation_view(protection: Protection, eps_levels: int) -> np.ndarray:
    """The change made visible, in gray: each pixel's largest change over its three channels, with its
    sign, -eps..+eps levels mapped to black..white, 0 (the pixel unchanged) to mid-gray. (Each channel
    on its own would show as a saturated rainbow, and a channel mean would show a pixel whose channels
    moved apart as unchanged.) A photo longer than DISPLAY_SIDE is shown whole, downscaled by keeping
    every n-th pixel (averaging would blur the grain of the change into gray), with a red frame around
    its centre, and beside it that centre as a CROP_SIDE-px crop at 100% (one pixel of the photo per
    pixel): what the change looks like at real size. uint8 (h, w, 3); gray but for the red frame."""
    delta = protection.perturbation()  # (H, W, 3), 8-bit levels
    largest = np.take_along_axis(delta, np.abs(delta).argmax(axis=-1)[..., None], axis=-1)  # (H, W, 1), signed
    gray = np.clip(127.5 + largest.astype(np.float32) * (127.5 / max(eps_levels, 1)), 0, 255).round().astype(np.uint8)
    change = np.repeat(gray, 3, axis=-1)  # (H, W, 3)
    height, width = change.shape[:2]
    if max(height, width) <= DISPLAY_SIDE:
        return change
    whole = PIL.Image.fromarray(change)
    factor = DISPLAY_SIDE / max(height, width)
    whole = whole.resize((max(1, round(width * factor)), max(1, round(height * factor))), PIL.Image.Resampling.NEAREST)
    side_h, side_w = min(CROP_SIDE, height), min(CROP_SIDE, width)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    crop = PIL.Image.fromarray(change[top:top + side_h, left:left + side_w])
    PIL.ImageDraw.Draw(whole).rectangle(
        [left * factor, top * factor, (left + side_w) * factor, (top + side_h) * factor], outline=(220, 0, 0), width=2)
    view = PIL.Image.new("RGB", (whole.width + GUTTER + crop.width, max(whole.height, crop.height)), (255, 255, 255))
    view.paste(whole, (0, 0))
    view.paste(crop, (whole.width + GUTTER, 0))
    return np.asarray(view)



def _db(x) -> str:
    return "identical" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:.2f} dB"


def _num(x, digits=3, unit="") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}{unit}"


def numbers_html(numbers: dict | None, posted: bool = False) -> str:
    """The measured numbers as a small HTML table: one column for the guarded photo, one for the
    control (random noise of the same budget) when there is one. Values never wrap (CSS)."""
    if not numbers:
        return ""
    control = numbers.get("control")
    columns = ["guarded"] + (["control"] if control else [])
    rows = []

    def row(label, hint, key, part, fmt):
        values = [fmt(numbers[part].get(key))] + ([fmt(control[part].get(key))] if control else [])
        rows.append((label, hint, values))

    row("PSNR photo vs original", "higher = less visible", "psnr", "image", _db)
    row("SSIM photo vs original", "1 = identical", "ssim", "image", lambda x: _num(x, 4))
    row("largest pixel change", "in 8-bit levels" if posted else "in 8-bit levels, at most eps", "linf", "image",
        lambda x: f"{x}/255")
    if numbers.get("video"):
        row("motion of its video", "mean optical flow", "flow_guarded", "video", lambda x: _num(x, 3, " px/f"))
        row("motion ratio to the original's", "< 1: moves less (frozen)", "flow_ratio", "video", _num)
        row("frame-change ratio", "1 - SSIM of frames, to the original's", "change_ratio", "video", _num)
        row("video PSNR vs the original's", "lower = further (ruined)", "disruption_psnr", "video", _db)
        row("video SSIM vs the original's", "lower = further", "disruption_ssim", "video", lambda x: _num(x, 4))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th scope='row'>{html.escape(label)}<small>{html.escape(hint)}</small></th>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
        for label, hint, values in rows)
    notes = ["after posting, all compared with the posted original"] if posted else []
    if control:
        notes.append("control: the original plus random noise of the same budget")
    if numbers.get("video"):
        notes.append(f"the {'posted ' if posted else ''}original's video moves "
                     f"{_num(numbers['video'].get('flow_original'), 3)} px/frame")
    caption = f"<caption>{html.escape('; '.join(notes))}</caption>" if notes else ""
    return f"<table class='guard-numbers'>{caption}<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


def verdict_markdown(numbers: dict | None) -> str:
    if not numbers or not numbers.get("verdict"):
        return ""
    verdict = numbers["verdict"]
    mark = {"frozen": "✅", "changed": "✅", "none": "⚠️", "control": "ℹ️"}.get(verdict["kind"], "")
    return f"{mark} **{verdict['sentence']}**" if verdict["kind"] != "none" else f"{mark} {verdict['sentence']}"


def motion_plot(flows: dict | None) -> matplotlib.figure.Figure | None:
    """Optical flow per frame of each video (a Figure, not pyplot: no global state across requests).
    Large text: the plot is shown at a third of its size on a phone."""
    if not flows:
        return None
    styles = {"original": ("original", "o-", 2.0), "guarded": ("guarded", "s--", 2.0), "control": ("control", "^:", 1.5)}
    with matplotlib.rc_context({"font.size": 15, "legend.fontsize": 14}):
        figure = matplotlib.figure.Figure(figsize=(5.0, 3.5), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        for key, (label, style, width) in styles.items():
            if flows.get(key):
                axes.plot(np.arange(1, len(flows[key]) + 1), flows[key], style, label=label, linewidth=width)
        axes.set_title("Motion per frame of each video")
        axes.set_xlabel("frame i -> i+1")
        axes.set_ylabel("flow (px)")
        axes.set_ylim(bottom=0)
        axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        figure.legend(loc="outside lower center", ncols=3, frameon=False)
    return figure


def settings_dict(model: str, seed: int, job: Job | None = None, options: VideoOptions | None = None,
                  posted_eps: int | None = None) -> dict:
    """The settings of a result as the page records them (and the example cache stores them): the
    model, the visitor's seed, and the protection's and the videos' settings where there are some; for a
    posted result, the guarded photo's budget and how it was posted."""
    settings = dict(model=model, seed=seed)
    if posted_eps is not None:
        settings.update(eps=posted_eps, posting=dict(scale=report.POSTING_SCALE, jpeg_quality=report.POSTING_QUALITY))
    if job is not None:
        settings.update(method=job.method, eps=job.eps, steps=0 if job.method == CONTROL else job.steps,
                        robust=bool(job.robust))
    if options is not None:
        settings.update(options.settings())
    return settings


def settings_text(settings: dict) -> str:
    """One sentence that says how to redo a result, from `settings_dict`."""
    parts = [f"model **{settings['model']}**", f"seed **{settings['seed']}**"]
    if "method" in settings:
        steps = settings["steps"]
        parts += [f"method **{settings['method']}**", f"eps **{settings['eps']}/255**",
                  "steps **0** (a control: nothing optimised)" if settings["method"] == CONTROL else f"steps **{steps}**",
                  f"robust **{'on' if settings['robust'] else 'off'}**"]
    if "frames" in settings:
        parts += [f"frames **{settings['frames'] or 'default'}**",
                  f"video steps **{settings['video_steps'] or 'default'}**"]
        if "motion_bucket" in settings:
            parts.append(f"motion bucket **{settings['motion_bucket']}**")
    return "To redo this result, use the same settings: " + ", ".join(parts) + "."


def safe_stem(path: str | None) -> str:
    """A file stem for downloads, from the upload's name: letters, digits, '-' and '_' only."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path or "image").stem).strip("_")[:40]
    return stem or "image"


def write_files(result: Result, eps: int, folder: Path, name: str | None, fps: int, suffix: str = "") -> dict[str, str]:
    """What a visitor can download of a result, written into `folder` under the upload's `name`:
    "guarded" (the guarded photo as PNG: the protection's, or the posted one), "perturbation" (the change
    amplified, where a protection was made) and, where videos were made, "video_original" and
    "video_guarded" (mp4; the control's video is measured, not shown). Returns role -> path."""
    stem = safe_stem(name)
    guarded = result.pictures["guarded"] if result.protection is None else result.protection.image  # its ICC profile
    files = {"guarded": gio.save_png(guarded, folder / f"{stem}_guarded{suffix}.png")}
    if result.protection is not None:
        files["perturbation"] = gio.save_png(perturbation_view(result.protection, eps),
                                             folder / f"{stem}_perturbation_x{127.5 / eps:.0f}.png")
    for role in ("original", "guarded") if result.videos else ():
        files[f"video_{role}"] = gio.save_video(result.videos[role], folder / f"{stem}_{role}{suffix}.mp4", fps=fps)
    return {role: str(path) for role, path in files.items()}


def example_credits(examples_dir: Path) -> str:
    """One line per example image (what, source, licence), from the table in examples/SOURCES.md."""
    path = examples_dir / "SOURCES.md"
    if not path.is_file():
        return ""
    lines = []
    for row in path.read_text().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".png"):
            name, what, source, licence = cells
            lines.append(f"- **{name}**: {what}; {source}; *{licence}*")
    return "Example images:\n" + "\n".join(lines) if lines else ""


# -- the page's texts -----------------------------------------------------------------------------------------
INTRO = """# guard: protect a photo from image-to-video models
guard adds a small, bounded change to a photo (at most *eps* levels out of 255 per pixel) meant to stop an
image-to-video model from animating it: the published methods aim for a **frozen** video (Vid-Freeze) or a
**ruined** one (I2VGuard). Whether they achieve it depends on the model, so every result ends with a
one-line **verdict** that compares the video of the guarded photo with the video of the original and with
the video of the photo plus random noise of the same budget (the control). Click an example to see a
stored result at once, or upload a photo and press **Protect & animate**."""
ABOUT = f"""
**Methods.** All six share one L-inf projected-gradient loop (`guard/optimize.py`): the guarded image
never differs from the original by more than *eps*/255 in any pixel channel, and is saved as an 8-bit PNG
of the photo's own size. The change is optimised through the resize the model's pipeline applies to a
photo of any size, and through a center crop to the model's aspect (`guard/resize.py`).
- **Vid-Freeze** (arXiv 2509.23279) pushes the model's temporal attention toward uniform over frames,
  meant to make every frame alike so that the video freezes.
- **MEDUSA** (ICML 2026, after its public code) lowers the nuclear norm of one early block's frame
  attention at one high noise level, so that every frame attends alike.
- **Freeze** (guard's own, experimental) pulls the denoiser's prediction at high noise toward a still
  video of the photo, where an image-to-video sampler lays out the motion.
- **I2VGuard** (Gui et al., CVPR 2025) pushes the image's latent, the denoised video and the temporal
  attention away from those of the clean video, meant to ruin the video.
- **PhotoGuard** (Salman et al., 2023) only attacks the VAE encoder: a cheap baseline made for image
  editing, not video.
- **Random noise** of the same budget is the control: a protection that does no better protects nothing.

**What is measured.** Only on the embedded model (4 photos x 4 video seeds the protections never saw,
8/255; the README's "Results"): Freeze cuts a video's motion by 21% on average and Vid-Freeze by 17-19%,
measurably more than the control; MEDUSA by 7% and I2VGuard by 3%, no more than the control. Most of each
video still moves. Freeze is this model's default, as the best measured; on every other model nothing has
been measured (no hub where guard is developed), and the default is Vid-Freeze.

**The verdict.** Three videos are made with the same seed and settings: from the original, from the
guarded photo, and from the control (the original with every pixel channel moved by +eps or -eps at
random, the whole budget: the `noise` method, drawn with the protection's own seed, as in
`python -m guard evaluate`). A protection is claimed only when the guarded photo's video moves at least
{report.FREEZE_MARGIN:.0%} less than the original's and {report.FREEZE_MARGIN * 100:.0f} points less than
the control's, or when its frames are at least {report.CHANGE_MARGIN_DB:.0f} dB PSNR further from the
original's than both the control's frames and the photo's own change; otherwise it says "no measurable
protection". One photo and one seed (smaller differences are within what seeds alone do):
`python -m guard evaluate` measures many.

**Numbers.** PSNR and SSIM compare the guarded image with the original, both at the photo's own size;
the largest pixel change is in 8-bit levels. Motion is the mean Farneback optical flow between
consecutive frames; a motion ratio below 1 means the video moves less than the original's. PSNR and SSIM
between two videos say how different they are (lower: more different). The methods run with the "fast"
preset of `guard/presets.py`.

**Does it survive posting?** The original, the guarded photo and the control are {report.POSTING}, as a
platform serves a posted photo, and animated again; the guarded one is compared with the posted original.
"""
FALLBACK_NOTE = ("**Note:** the embedded model is not installed here, so this page runs `tiny-svd`, a "
                 "random-weight model for tests: its videos are noise.")
CSS = """
.guard-out img { image-rendering: pixelated; object-fit: contain; }
.guard-out .image-container, .guard-out .image-frame { padding-top: 2.4rem; }
#guard-settings p { font-size: 0.9em; }
#example-credits { font-size: 0.8em; opacity: 0.85; }
#model-note p, #outputs-note p { font-size: 0.85em; opacity: 0.9; }
#verdict p, #posted-verdict p { font-size: 1.05em; }
.guard-numbers { width: 100%; border-collapse: collapse; font-size: 0.92em; margin: 0 !important; border: none !important; }
.guard-numbers caption { caption-side: bottom; text-align: left; font-size: 0.85em; opacity: 0.8; padding-top: 0.4em; }
.guard-numbers th, .guard-numbers td { padding: 0.3em 0.5em !important; border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important; text-align: left; vertical-align: top;
  word-break: normal; overflow-wrap: normal; hyphens: none; background: none !important; }
.guard-numbers thead, .guard-numbers tbody, .guard-numbers tr { border: none !important; background: none !important; }
.guard-numbers td { white-space: nowrap; font-variant-numeric: tabular-nums; }
.guard-numbers thead th { font-weight: 600; }
.guard-numbers tbody th { font-weight: 500; width: 55%; }
.guard-numbers tbody th small { display: block; font-weight: 400; opacity: 0.7; }
@media (max-width: 480px) { .guard-numbers { font-size: 0.85em; } .guard-numbers tbody th { width: auto; } }
#model input { padding-right: 2.2em; text-overflow: ellipsis; }
#run-status { min-height: 3.2em; }
#run-status p, #link-note p { font-size: 0.9em; }
#link-note p { opacity: 0.85; }
"""
OUTPUTS_NOTE = ("The guarded PNG has the photo's own size. Change, amplified: each pixel's largest change over its "
                f"three colours, mid-gray = unchanged, black / white = -eps / +eps; a photo over {DISPLAY_SIDE} px is "
                "shown whole (every n-th pixel) with its centre (red frame) beside it at 100%: open it full screen to "
                "see the change at real size. Both videos are made from the photos at their own size, resized by the "
                "model's pipeline as an animator's would, with the same seed and settings.")
POSTING_NOTE = (f"### Does it survive posting?\nThe original, the guarded image and the control, each {report.POSTING} "
                "as a platform would, animated again with the same seed.")


# -- what the page says while a job runs, and its links (guard.links) -------------------------------------------
#: the status line under the buttons: what runs (the progress bar and the time left show over it), then the end
STATUS = {
    "protect_and_animate": "⏳ **Working:** protecting the photo, then making three videos with the same seed (the "
                           "original, the guarded photo, the noise control). The bar here shows each step and the time "
                           "left; the result appears beside (below on a phone).",
    "protect": "⏳ **Working:** protecting the photo. The bar here shows each step and the time left.",
    "animate": "⏳ **Working:** making a video of the photo as it is. The bar here shows each step and the time left.",
    "done": "✅ **Done.** The result is beside (below on a phone); **Copy link** under it gives a link that redoes it.",
    "failed": "⚠️ **Stopped:** the message in the corner says why.",
}
LINK_NOTE = ("A link carries the settings and the seed (and which example, for an example photo), so opening it redoes "
             "the same result. It never carries your own photo (nothing you upload is kept): whoever opens it uploads "
             "the same photo and presses **Protect & animate**.")
LINK_WITHOUT_PHOTO = ("🔗 The controls are set to this link's settings. A link does not carry the photo: upload the photo "
                      "it was made from and press **Protect & animate** (the same photo gives the same result).")
#: the page's scripts (Gradio runs them in the browser): close every notice (a new photo makes them stale); copy
#: the link (this page's address plus the query of guard.links); press the run button (a link to a result that is
#: not stored); bring the result into view when it is below the screen (a phone) or above it
CLOSE_NOTICES = "() => { document.querySelectorAll('.toast-close').forEach((button) => button.click()); }"
COPY_LINK = """(query) => {
    const url = window.location.origin + window.location.pathname + (query ? "?" + query : "");
    if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
    return url;
}"""
PRESS_RUN = "(go) => { if (go) setTimeout(() => document.getElementById('run').click(), 300); }"
SCROLL_TO_RESULTS = """() => {
    const result = document.getElementById('guarded-image');
    const top = result ? result.getBoundingClientRect().top : 0;
    if (result && (top < 0 || top > window.innerHeight * 0.6)) result.scrollIntoView({behavior: 'smooth', block: 'start'});
}"""
