"""`python -m guard evaluate`: every method at every budget on a folder of photos, measured one way.

For each image: the video of the original is generated once (seed `seed`); then for each method and
eps the image is protected, a video is generated from the guarded image with the same seed, and the
two are compared with `guard.metrics` (no metric is computed here). The same comparison is repeated
after a "posted online" transformation (JPEG q=75, resize 0.75x and back) of both photos: the video
of the transformed guarded photo is compared with the video of the identically transformed original,
so that the row measures what the protection still does, not what JPEG alone does to a video.

Writes into the report folder:
- results.csv: one row per (image, method, eps), written as it is measured (a cut run keeps its rows);
- per_frame.json: per-frame motion and disruption arrays behind the plots;
- summary.md: command line, machine, settings, mean +- std per method and eps, skipped files;
- motion_per_frame.png, effect_vs_eps.png;
- images/ (guarded PNGs) and videos/ (mp4 of every generated video, original and guarded).
summary.md is refreshed after every row and the plots after every image, so a cut run still has a
(partial) summary.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm import tqdm

from . import io, metrics
from .methods import METHODS, get_method
from .optimize import PGDConfig, protect
from .presets import settings_for
from .targets.base import Target

logger = logging.getLogger(__name__)

#: the photo as given (""), then the "posted online" transformations of the robustness columns, by
#: column prefix; each is applied to the original and to the guarded photo alike
CONDITIONS = {
    "": lambda image: image,
    "jpeg_": lambda image: metrics.jpeg(image, quality=75),
    "resize_": lambda image: metrics.resize_roundtrip(image, scale=0.75),
}

#: the columns of the summary table: (results.csv column, heading)
KEY_COLUMNS = [
    ("psnr", "PSNR dB"),
    ("ssim", "SSIM"),
    ("flow_ratio", "flow ratio"),
    ("change_ratio", "change ratio"),
    ("disruption_psnr", "video PSNR dB"),
    ("disruption_ssim", "video SSIM"),
    ("jpeg_flow_ratio", "JPEG flow ratio"),
    ("resize_flow_ratio", "resize flow ratio"),
    ("seconds", "seconds"),
]

SKIPPED_SCORERS = (
    "VBench-style scores (subject consistency, motion smoothness, aesthetic and imaging quality) were "
    "skipped: no VBench scorers here (they need downloaded DINO, AMT, LAION-aesthetic and MUSIQ weights). "
    "Where they are available the same command could add them as columns; none are estimated here."
)


@dataclass
class EvalConfig:
    methods: list[str]  # names from guard.methods.METHODS
    eps: list[int]  # L-inf budgets in 8-bit levels: eps/255 in [0, 1] units
    steps: int | None = None  # PGD steps of every gradient method (None: the preset's, per method)
    preset: str = "fast"  # method parameters and default steps from guard/presets.py: "fast" or "reference"
    seed: int = 0  # seed of every protection and every video (the same for original and guarded)
    robust: bool = False  # protect through random JPEG / resize / crop (EOT, see guard.optimize)
    frames: int | None = None  # frames per video (None: the model's default)
    video_steps: int | None = None  # denoising steps per video (None: the model's default)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if not self.methods or unknown:
            raise ValueError(f"methods must be some of {', '.join(METHODS)}, got {self.methods!r}")
        if not self.eps or any(not (isinstance(e, int) and 0 <= e <= 255) for e in self.eps):
            raise ValueError(f"eps must be integers in 0..255 (8-bit levels), got {self.eps!r}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.preset not in ("fast", "reference"):
            raise ValueError(f"preset must be 'fast' or 'reference', got {self.preset!r}")
        if self.frames is not None and self.frames < 2:
            raise ValueError(f"frames must be >= 2 to measure motion, got {self.frames}")


@dataclass
class Report:
    rows: list[dict] = field(default_factory=list)  # the rows of results.csv
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    curves: dict = field(default_factory=dict)  # image -> {"original" | "method/eps": {name: list per frame}}
    images_done: int = 0
    images_total: int = 0
    seconds: float = 0.0


def machine(target: Target) -> dict:
    """Where and on what the numbers were measured (goes to the top of summary.md)."""
    device = str(target.device)
    if target.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(target.device)})"
    return dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                torch=torch.__version__, device=device, dtype=str(target.dtype).replace("torch.", ""),
                model=getattr(target, "name", target.family), size=f"{target.width}x{target.height}",
                frames=target.num_frames, video_steps=target.num_inference_steps)


def run(target: Target, files: list[Path], config: EvalConfig, out_dir: str | os.PathLike,
        command: str = "", progress: bool = True, overwrite: bool = False) -> Report:
    """Evaluate every method and eps of `config` on `files` against `target`; writes `out_dir`.

    Unreadable images (`io.InputError`) are logged, listed in the report and skipped. A folder that
    already holds a results.csv is refused unless `overwrite`: two runs writing one folder corrupt
    each other's files (seen: two people started the same -o on a shared machine)."""
    out = Path(out_dir)
    if (out / "results.csv").exists() and not overwrite:
        raise io.InputError(f"{out} already holds a report (results.csv): choose another folder or overwrite it")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    report = Report(images_total=len(files))
    host = machine(target)
    start = time.perf_counter()
    per_image = 1 + len(config.methods) * len(config.eps)  # units of the progress bar: videos of originals + protections
    with tqdm(total=len(files) * per_image, desc="evaluate", disable=not progress) as bar, \
            open(out / "results.csv", "w", newline="") as csv_file:
        writer = None
        for path in files:
            try:
                image, notices = io.load_image(path)
            except io.InputError as e:
                logger.warning("skipped: %s", e)
                report.skipped.append((path.name, str(e)))
                bar.update(per_image)
                continue
            for notice in notices:
                logger.info("note: %s", notice)
            curves = report.curves.setdefault(path.stem, {})
            bar.set_postfix_str(f"{path.name}: original")
            original = np.asarray(target.prepare_image(image))  # (H, W, 3) uint8, what protect measures against
            references = {prefix: _video(target, transform(original), config,
                                         out / "videos" / f"{path.stem}_{prefix}original.mp4")
                          for prefix, transform in CONDITIONS.items()}
            curves["original"] = dict(flow=metrics.flow_per_frame(references[""]).tolist(),
                                      change=metrics.temporal_change_per_frame(references[""]).tolist())
            bar.update(1)
            for name in config.methods:
                for eps in config.eps:
                    bar.set_postfix_str(f"{path.name}: {name} {eps}/255")
                    row, curve = _evaluate_one(target, image, path, name, eps, config, references, out)
                    curves[f"{name}/{eps}"] = curve
                    if writer is None:
                        writer = csv.DictWriter(csv_file, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)
                    csv_file.flush()
                    report.rows.append(row)
                    report.seconds = time.perf_counter() - start
                    write_outputs(report, config, out, command, host, plots=False)
                    bar.update(1)
            report.images_done += 1
            write_outputs(report, config, out, command, host)
    report.seconds = time.perf_counter() - start
    write_outputs(report, config, out, command, host, plots=False)  # the plots are current after each image
    return report


def _video(target: Target, image: np.ndarray, config: EvalConfig, mp4: Path) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of the video made from an 8-bit image, saved to `mp4` too."""
    video = target.generate(PIL.Image.fromarray(image), seed=config.seed, num_frames=config.frames,
                            num_inference_steps=config.video_steps)
    io.save_video(video.frames, mp4)
    return video.frames


def _evaluate_one(target, image, path, name, eps, config, references, out) -> tuple[dict, dict]:
    """Protect one image with one method at one eps and measure it: (results.csv row, per-frame curves)."""
    steps, params = settings_for(name, config.preset, target)
    steps = steps if config.steps is None else config.steps
    method = get_method(name, **params)
    protection = protect(target, image, method, PGDConfig(eps=eps / 255, steps=steps, seed=config.seed,
                                                          robust=config.robust))
    tag = f"{path.stem}_{name}_eps{eps}"
    io.save_png(protection.image, out / "images" / f"{tag}.png")
    original, guarded = np.asarray(protection.original), np.asarray(protection.image)
    loss = protection.history.get("loss", [])
    row = dict(image=path.name, method=name, eps=eps, steps=steps if method.uses_gradient else 0,
               params=json.dumps(params), robust=config.robust, seed=config.seed, seconds=round(protection.seconds, 3),
               loss_start=loss[0] if loss else math.nan, loss_end=loss[-1] if loss else math.nan,
               **metrics.imperceptibility(original, guarded))
    videos = {}
    for prefix, transform in CONDITIONS.items():
        videos[prefix] = _video(target, transform(guarded), config, out / "videos" / f"{tag}_{prefix}guarded.mp4")
        row.update({prefix + k: v for k, v in metrics.compare_videos(references[prefix], videos[prefix]).items()})
    d = metrics.disruption(references[""], videos[""])
    curve = dict(flow=metrics.flow_per_frame(videos[""]).tolist(),
                 change=metrics.temporal_change_per_frame(videos[""]).tolist(),
                 video_psnr=d["psnr_per_frame"].tolist(), video_ssim=d["ssim_per_frame"].tolist())
    return row, curve


# -- outputs ---------------------------------------------------------------------------------------
def write_outputs(report: Report, config: EvalConfig, out: Path, command: str, host: dict,
                  plots: bool = True) -> None:
    (out / "per_frame.json").write_text(json.dumps(report.curves, indent=1))  # inf -> Infinity
    (out / "summary.md").write_text(summary(report, config, command, host))
    if plots and report.rows:
        plot(report, config, out)


def mean_std(values) -> str:
    """'mean ± std' of the finite values, then how many were inf or nan (never silently dropped)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    text = f"{finite.mean():.3g} ± {finite.std():.2g}" if finite.size else "-"
    if finite.size < values.size:
        kinds = [k for k, bad in (("inf", np.isinf(values).any()), ("nan", np.isnan(values).any())) if bad]
        text += f" ({values.size - finite.size} {'/'.join(kinds)})"
    return text


def summary(report: Report, config: EvalConfig, command: str, host: dict) -> str:
    rows = report.rows
    state = ("complete" if report.images_done + len(report.skipped) == report.images_total
             else f"partial: {report.images_done + len(report.skipped)} of {report.images_total} images done, "
                  f"{len(rows)} rows so far")
    lines = [
        "# guard evaluation",
        "",
        f"Command: `{command}`" if command else "Command: (called from Python)",
        "",
        f"Machine: {host['platform']}, {host['cpus']} CPUs ({host['threads']} torch threads), torch {host['torch']}, "
        f"device {host['device']}, {host['dtype']}.",
        "",
        f"Model: {host['model']} at {host['size']}; videos of {config.frames or host['frames']} frames, "
        f"{config.video_steps or host['video_steps']} denoising steps, seed {config.seed}.",
        "",
        f"Settings: {json.dumps(asdict(config))}. Run {state}, {report.seconds / 60:.1f} min.",
        "",
    ]
    originals = [c["original"]["flow"] for c in report.curves.values()]
    if originals:
        lines += [f"Videos of the originals: mean optical flow {mean_std([np.mean(f) for f in originals])} px/frame "
                  f"over {len(originals)} images.", ""]
    header = ["method", "eps", "n", *[h for _, h in KEY_COLUMNS]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in config.methods:
        for eps in config.eps:
            group = [r for r in rows if r["method"] == name and r["eps"] == eps]
            if group:
                cells = [mean_std([r[c] for r in group]) for c, _ in KEY_COLUMNS]
                lines.append("| " + " | ".join([name, f"{eps}/255", str(len(group)), *cells]) + " |")
    lines += [
        "",
        "Mean ± std over images. PSNR, SSIM: guarded vs original photo (at the model's resolution). Flow ratio,"
        " change ratio: mean optical flow (Farneback) and mean 1 - SSIM of consecutive frames, video of the"
        " guarded photo / video of the original (same seed): < 1 = frozen. Video PSNR, SSIM: per-frame, guarded"
        " video vs original video: low = ruined. JPEG (q=75) and resize (0.75x and back) flow ratios: the same"
        " after both photos went through that transformation. Seconds: protection wall time. Every column,"
        " per-frame arrays and the videos are in results.csv, per_frame.json and videos/.",
        "",
        SKIPPED_SCORERS,
        "",
    ]
    if report.skipped:
        lines += ["Skipped (unreadable):", ""] + [f"- {why}" for _, why in report.skipped] + [""]
    return "\n".join(lines)


def plot(report: Report, config: EvalConfig, out: Path) -> None:
    """motion_per_frame.png (originals vs each method at the largest eps) and effect_vs_eps.png."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = max(config.eps)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in [("original", "original"), *[(f"{m}/{largest}", m) for m in config.methods]]:
        for ax, quantity in zip(axes, ["flow", "change"]):
            per_image = [c[key][quantity] for c in report.curves.values() if key in c]
            if per_image:
                ax.plot(range(1, len(per_image[0]) + 1), np.mean(per_image, axis=0), marker="o", label=label,
                        linewidth=2.5 if key == "original" else 1.5, color="black" if key == "original" else None)
    axes[0].set(title=f"optical flow (eps {largest}/255)", xlabel="frame pair", ylabel="px / frame")
    axes[1].set(title=f"1 - SSIM of consecutive frames (eps {largest}/255)", xlabel="frame pair")
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "motion_per_frame.png", dpi=90)
    plt.close(fig)

    panels = [("flow_ratio", "flow ratio (guarded / original)"), ("change_ratio", "change ratio"),
              ("disruption_psnr", "video PSNR dB"), ("disruption_ssim", "video SSIM")]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.4))
    for name, color in zip(config.methods, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        for ax, (column, title) in zip(axes, panels):
            styles = [("", "-")] + ([("jpeg_", "--"), ("resize_", ":")] if column == "flow_ratio" else [])
            for prefix, style in styles:
                groups = [(eps, [r[prefix + column] for r in report.rows if r["method"] == name and r["eps"] == eps])
                          for eps in config.eps]
                xs = [eps for eps, values in groups if values]
                ys = [_finite_mean(values) for _, values in groups if values]
                ax.plot(xs, ys, style, marker="o", color=color, label=None if prefix else name)
            ax.set(title=title, xlabel="eps (/255)", xticks=config.eps)
    for ax in axes[:2]:
        ax.axhline(1.0, color="gray", linewidth=0.8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8,
               title="solid: as guarded\n--: JPEG q75\n..: resize 0.75x", title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(out / "effect_vs_eps.png", dpi=90)
    plt.close(fig)


def _finite_mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
