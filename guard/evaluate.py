"""`python -m guard evaluate`: every method at every budget on a folder of photos, measured one way.

Runs the chain of `guard.jobs`, as the app does. For each image, each method and each eps, the image is
protected once (`jobs.Job`, `jobs.protect_photo`), at its own size (at most `guard.limits.MAX_SIDE` a
side), with the protection's own seed (`EvalConfig.seed`); every video (`jobs.animate`) is made from a
photo at that size, which the pipeline resizes to the model's working size as an animator's pipeline
would (`Target.generate`), so all the videos compared have the model's size. With `working_size`, each
photo is first center-cropped and resized to the working size and guarded there, as guard did before
it guarded photos at their own size: the two runs side by side say how much guarding the full-size
photo through the model's resize costs the protection.

Then, for each of several video seeds (`video_seeds`, default 1000-1003, never the protection's seed:
a protection must not see the seeds it is judged on), a video is made from the original and one from
the guarded image with that seed, and the two are compared with `guard.metrics` (no metric is
computed here). The same comparison is repeated after both photos were posted online
(`guard.report.posted`, the app's "Does it survive posting?": downsized to 0.75x, then JPEG at
quality 75; the `posted_` columns): the video of the posted guarded photo is compared with the video
of the identically posted original, so that the row measures what the protection still does, not
what posting alone does to a video.

Statistics (summary.md): each column's mean with a 95% confidence interval, a t-interval over images
of each image's mean over its video seeds (the seeds of one image share its protection, so they are
not independent draws: the image is the unit, and seed-to-seed variation enters through the image
means; with a single image the seeds are the unit). Each method is compared with the noise control
by paired differences: its row minus the noise row of the same image, eps and video seed, averaged
per image, with the same t-interval; it differs from the control at the 5% level (a two-sided paired
t-test on the image means) when that interval excludes 0. The control is `jobs.CONTROL`, the app's.

Writes into the report folder:
- results.csv: one row per (image, method, eps, video seed), written as it is measured (a cut run
  keeps its rows);
- per_frame.json: per-frame motion and disruption arrays behind the plots, per image and video seed;
- summary.md: command line, machine, settings, means with 95% intervals, differences from the noise
  control, skipped files;
- motion_per_frame.png, effect_vs_eps.png;
- images/ (guarded PNGs) and videos/ (mp4 of the videos of the first video seed only, original and
  guarded, as given and posted: the other seeds' videos are measured but not kept, to keep the folder
  small).
summary.md is refreshed after every protection and the plots after every image, so a cut run still
has a (partial) summary. A folder that already holds a results.csv is refused unless overwritten
(`check_report_folder`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from tqdm import tqdm

from . import io, jobs, limits, metrics
from .jobs import CONTROL
from .methods import METHODS
from .report import POSTING, POSTING_QUALITY, POSTING_SCALE, posted
from .targets.base import Target

logger = logging.getLogger(__name__)

#: the photo as given (""), and posted online (`guard.report.posted`, the app's "Does it survive
#: posting?"), by column prefix; each is applied to the original and to the guarded photo alike
CONDITIONS = {
    "": lambda image: image,
    "posted_": posted,
}

#: the video seeds of an evaluation: VIDEO_SEED_BASE + k (the protections use their own, default 0)
VIDEO_SEED_BASE = 1000
DEFAULT_VIDEO_SEEDS = 4

#: the columns of the summary table: (results.csv column, heading)
KEY_COLUMNS = [
    ("psnr", "PSNR dB"),
    ("ssim", "SSIM"),
    ("flow_ratio", "flow ratio"),
    ("change_ratio", "change ratio"),
    ("disruption_psnr", "video PSNR dB"),
    ("disruption_ssim", "video SSIM"),
    ("posted_flow_ratio", "posted flow ratio"),
    ("seconds", "seconds"),
]
#: the columns compared with the control (effects on the videos)
EFFECT_COLUMNS = [c for c in KEY_COLUMNS if c[0] not in ("psnr", "ssim", "seconds")]

SKIPPED_SCORERS = (
    "VBench-style scores (subject consistency, motion smoothness, aesthetic and imaging quality) were "
    "skipped: no VBench scorers here (they need downloaded DINO, AMT, LAION-aesthetic and MUSIQ weights). "
    "Where they are available the same command could add them as columns; none are estimated here."
)


#: the file whose presence says a folder holds a report
RESULTS = "results.csv"


def video_seeds(n: int = DEFAULT_VIDEO_SEEDS) -> list[int]:
    """The seeds of n evaluation videos: VIDEO_SEED_BASE, VIDEO_SEED_BASE + 1, ..."""
    return [VIDEO_SEED_BASE + k for k in range(n)]


def check_report_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """`out_dir` as a Path, unless it already holds a report (a results.csv) and `overwrite` is False:
    then InputError. Two runs writing one folder corrupt each other's files (seen: two people started
    the same -o on a shared machine)."""
    out = Path(out_dir)
    if (out / RESULTS).exists() and not overwrite:
        raise io.InputError(f"{out} already holds a report ({RESULTS}): choose another folder, or replace it "
                            "(--overwrite; overwrite=True from Python)")
    return out


@dataclass
class EvalConfig:
    """What an evaluation runs. Every value is checked as the app and the CLI check it (`guard.limits`,
    `jobs.check_method`); a refusal is an InputError naming the field, the range and the value."""

    methods: list[str]  # names from guard.methods.METHODS
    eps: list[int]  # L-inf budgets in 8-bit levels (eps/255 in [0, 1] units), each 1..limits.MAX_EPS
    steps: int | None = None  # PGD steps of every gradient method, 0..limits.MAX_STEPS (None: the preset's)
    preset: str = "fast"  # method parameters and default steps from guard/presets.py: "fast" or "reference"
    seed: int = 0  # the protections' own seed (PGD, noise draws, EOT, I2VGuard's clean video V0)
    video_seeds: list[int] = field(default_factory=video_seeds)  # every pair of videos is made at each
    robust: bool = False  # protect through random JPEG / resize / crop (EOT, see guard.optimize)
    frames: int | None = None  # frames per video, 2..limits.MAX_FRAMES (None or 0: the model's default)
    video_steps: int | None = None  # denoising steps per video, 1..limits.MAX_VIDEO_STEPS (None or 0: the model's)
    working_size: bool = False  # guard and judge each photo center-cropped to the model's working size

    def __post_init__(self):
        if not self.methods:
            raise io.InputError(f"methods must name at least one of {', '.join(METHODS)}, got {self.methods!r}")
        if not self.eps:
            raise io.InputError(f"eps must be at least one budget (8-bit levels), got {self.eps!r}")
        for method in self.methods:  # each protection checked now, as `jobs.Job` checks it, not after hours
            for eps in self.eps:
                self.job(method, eps)
        if self.preset not in ("fast", "reference"):
            raise io.InputError(f"preset must be 'fast' or 'reference', got {self.preset!r}")
        self.frames, self.video_steps = limits.frames(self.frames), limits.video_steps(self.video_steps)
        limits.seed(self.seed)
        if not self.video_seeds or len(set(self.video_seeds)) != len(self.video_seeds):
            raise io.InputError(f"video_seeds must be distinct, at least one, got {self.video_seeds!r}")
        for seed in self.video_seeds:
            limits.seed(seed, "video_seeds")
        if self.seed in self.video_seeds:
            raise io.InputError(f"the protection seed {self.seed} is also a video seed: a protection must never see "
                                "the seeds it is judged on; choose a protection seed outside the video seeds")

    def job(self, method: str, eps: int) -> jobs.Job:
        """The protection of one method at one budget, as the app would run it with these settings."""
        return jobs.Job(method=method, eps=eps, steps=self.steps, preset=self.preset, seed=self.seed,
                        robust=self.robust, working_size=self.working_size)

    def video_options(self) -> jobs.VideoOptions:
        return jobs.VideoOptions(frames=self.frames, video_steps=self.video_steps)


def units_per_image(config: EvalConfig) -> int:
    """Units of the progress bar per image: one per set of videos (the original's, or one
    protection's), per video seed."""
    return len(config.video_seeds) * (1 + len(config.methods) * len(config.eps))


@dataclass
class Report:
    rows: list[dict] = field(default_factory=list)  # the rows of results.csv
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    curves: dict = field(default_factory=dict)  # image -> video seed -> {"original" | "method/eps": {name: list}}
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
        command: str = "", progress: bool = True, overwrite: bool = False, bar=None) -> Report:
    """Evaluate every method and eps of `config` on `files` against `target`; writes `out_dir`.

    `bar`: a progress bar to advance instead of making one (tqdm-like: update, set_postfix_str, a
    context manager); `guard.distributed` passes one that counts the units of every process.

    Unreadable images (`io.InputError`) are logged, listed in the report and skipped. A folder that
    already holds a report is refused unless `overwrite` (`check_report_folder`), and so is a frame
    count the model cannot make (`jobs.VideoOptions.check`)."""
    out = check_report_folder(out_dir, overwrite)
    options = config.video_options().check(target)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    report = Report(images_total=len(files))
    host = machine(target)
    start = time.perf_counter()
    seeds = config.video_seeds
    per_image = units_per_image(config)
    if bar is None:
        bar = tqdm(total=len(files) * per_image, desc="evaluate", disable=not progress)
    with bar, open(out / RESULTS, "w", newline="") as csv_file:
        writer = None
        for path in files:
            try:
                image, notices = io.load_image(path, limits.MAX_SIDE)
                if config.working_size:
                    image = target.prepare_image(image)
            except io.InputError as e:
                logger.warning("skipped: %s", e)
                report.skipped.append((path.name, str(e)))
                bar.update(per_image)
                continue
            for notice in notices:
                logger.info("note: %s", notice)
            curves = report.curves.setdefault(path.stem, {})
            original = np.asarray(image)  # (H, W, 3) uint8, what protect measures against
            references = {}  # video seed -> condition -> frames of the original's video
            for seed in seeds:
                bar.set_postfix_str(f"{path.name}: original, video seed {seed}")
                references[seed] = {prefix: _video(target, transform(original), seed, options,
                                                   out / "videos" / f"{path.stem}_{prefix}original.mp4"
                                                   if seed == seeds[0] else None)
                                    for prefix, transform in CONDITIONS.items()}
                curves.setdefault(str(seed), {})["original"] = dict(
                    flow=metrics.flow_per_frame(references[seed][""]).tolist(),
                    change=metrics.temporal_change_per_frame(references[seed][""]).tolist())
                bar.update(1)
            for name in config.methods:
                for eps in config.eps:
                    bar.set_postfix_str(f"{path.name}: {name} {eps}/255")
                    for row, seed, curve in _evaluate_one(target, image, path, config.job(name, eps), config,
                                                          options, references, out):
                        curves[str(seed)][f"{name}/{eps}"] = curve
                        if writer is None:
                            writer = csv.DictWriter(csv_file, fieldnames=list(row))
                            writer.writeheader()
                        writer.writerow(row)
                        csv_file.flush()
                        report.rows.append(row)
                        bar.update(1)
                    report.seconds = time.perf_counter() - start
                    write_outputs(report, config, out, command, host, plots=False)
            report.images_done += 1
            write_outputs(report, config, out, command, host)
    report.seconds = time.perf_counter() - start
    write_outputs(report, config, out, command, host, plots=False)  # the plots are current after each image
    return report


def _video(target: Target, image: np.ndarray, seed: int, options: jobs.VideoOptions, mp4: Path | None) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of the video made from an 8-bit image with `seed`; saved to `mp4` if given."""
    frames = jobs.animate(target, image, seed, options)
    if mp4 is not None:
        io.save_video(frames, mp4)
    return frames


def _evaluate_one(target, image, path, job: jobs.Job, config, options, references, out):
    """Protect one image as `job` asks, then measure it at every video seed: yields (results.csv row,
    video seed, per-frame curves) per seed."""
    # the image is already at the working size with config.working_size: guarded there, no views drawn
    protection = jobs.protect_photo(target, image, job)
    tag = f"{path.stem}_{job.method}_eps{job.eps}"
    io.save_png(protection.image, out / "images" / f"{tag}.png")
    original, guarded = np.asarray(protection.original), np.asarray(protection.image)
    loss = protection.history.get("loss", [])
    # the method's parameters as it ran (the preset's over the method's defaults)
    params = {f.name: protection.settings[f.name] for f in dataclasses.fields(METHODS[job.method])}
    common = dict(steps=protection.settings["steps"], params=json.dumps(params), robust=job.robust,
                  protect_seed=job.seed, seconds=round(protection.seconds, 3),
                  loss_start=loss[0] if loss else math.nan, loss_end=loss[-1] if loss else math.nan,
                  **metrics.imperceptibility(original, guarded))
    for seed in config.video_seeds:
        row = dict(image=path.name, method=job.method, eps=job.eps, video_seed=seed, **common)
        videos = {}
        for prefix, transform in CONDITIONS.items():
            mp4 = out / "videos" / f"{tag}_{prefix}guarded.mp4" if seed == config.video_seeds[0] else None
            videos[prefix] = _video(target, transform(guarded), seed, options, mp4)
            compared = metrics.compare_videos(references[seed][prefix], videos[prefix])
            row.update({prefix + k: v for k, v in compared.items()})
        d = metrics.disruption(references[seed][""], videos[""])
        curve = dict(flow=metrics.flow_per_frame(videos[""]).tolist(),
                     change=metrics.temporal_change_per_frame(videos[""]).tolist(),
                     video_psnr=d["psnr_per_frame"].tolist(), video_ssim=d["ssim_per_frame"].tolist())
        yield row, seed, curve


# -- outputs ---------------------------------------------------------------------------------------
def write_outputs(report: Report, config: EvalConfig, out: Path, command: str, host: dict,
                  plots: bool = True) -> None:
    (out / "per_frame.json").write_text(json.dumps(report.curves, indent=1))  # inf -> Infinity
    (out / "summary.md").write_text(summary(report, config, command, host))
    if plots and report.rows:
        plot(report, config, out)


def interval(values_by_image: dict[str, list[float]]) -> dict:
    """Mean and 95% confidence interval of a quantity measured per image and video seed.

    values_by_image: image -> its values (one per video seed). Non-finite values are left out and
    counted. The unit is the image: each image's mean over its finite values, then a t-interval over
    the image means (df = images - 1); with a single image, a t-interval over its values. Returns
    mean, low, high (nan where there are too few units), n (units), unit ("images" | "seeds"),
    bad ({"inf": k, "nan": k} of the values left out)."""
    bad = {"inf": 0, "nan": 0}
    per_image = []
    for values in values_by_image.values():
        values = np.asarray(values, dtype=np.float64)
        bad["inf"] += int(np.isinf(values).sum())
        bad["nan"] += int(np.isnan(values).sum())
        per_image.append(values[np.isfinite(values)])
    per_image = [v for v in per_image if v.size]
    if len(per_image) == 1:
        units, unit = per_image[0], "seeds"
    else:
        units, unit = np.array([v.mean() for v in per_image]), "images"
    n = len(units)
    mean = float(units.mean()) if n else math.nan
    low = high = math.nan
    if n >= 2:
        half = scipy.stats.t.ppf(0.975, n - 1) * units.std(ddof=1) / math.sqrt(n)
        low, high = mean - half, mean + half
    return dict(mean=mean, low=low, high=high, n=n, unit=unit, bad={k: v for k, v in bad.items() if v})


def format_interval(stats: dict, mark_nonzero: bool = False) -> str:
    """'mean [low, high]' (3 significant digits), '*' after it when asked and the interval excludes 0,
    then how many values were inf or nan (never silently dropped)."""
    if not stats["n"]:
        text = "-"
    elif math.isnan(stats["low"]):
        text = f"{stats['mean']:.3g}"
    else:
        text = f"{stats['mean']:.3g} [{stats['low']:.3g}, {stats['high']:.3g}]"
        if mark_nonzero and (stats["low"] > 0 or stats["high"] < 0):
            text += " *"
    if stats["bad"]:
        text += f" ({', '.join(f'{k} {kind}' for kind, k in stats['bad'].items())})"
    return text


def by_image(rows: list[dict], column: str) -> dict[str, list[float]]:
    grouped: dict[str, list[float]] = {}
    for r in rows:
        grouped.setdefault(r["image"], []).append(float(r[column]))
    return grouped


def differences_from_control(rows: list[dict], method: str, eps: int, column: str) -> dict[str, list[float]]:
    """image -> [row of `method` - row of the control], paired on (image, eps, video seed)."""
    control = {(r["image"], r["video_seed"]): float(r[column]) for r in rows
               if r["method"] == CONTROL and r["eps"] == eps}
    grouped: dict[str, list[float]] = {}
    for r in rows:
        key = (r["image"], r["video_seed"])
        if r["method"] == method and r["eps"] == eps and key in control:
            grouped.setdefault(r["image"], []).append(float(r[column]) - control[key])
    return grouped


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
        f"Model: {host['model']} at {host['size']}; photos guarded "
        f"{'at that working size (center-cropped first)' if config.working_size else 'at their own size'}; "
        f"videos of {config.frames or host['frames']} frames, "
        f"{config.video_steps or host['video_steps']} denoising steps, video seeds "
        f"{', '.join(map(str, config.video_seeds))}; protections with their own seed {config.seed}.",
        "",
        f"Settings: {json.dumps(asdict(config))}. Run {state}, {report.seconds / 60:.1f} min.",
        "",
    ]
    originals = {image: [float(np.mean(c["original"]["flow"])) for c in per_seed.values()]
                 for image, per_seed in report.curves.items() if per_seed}
    if originals:
        lines += [f"Videos of the originals: mean optical flow {format_interval(interval(originals))} px/frame "
                  f"(mean [95% CI]) over {len(originals)} images x {len(config.video_seeds)} video seeds.", ""]
    header = ["method", "eps", "images x seeds", *[h for _, h in KEY_COLUMNS]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in config.methods:
        for eps in config.eps:
            group = [r for r in rows if r["method"] == name and r["eps"] == eps]
            if group:
                cells = [format_interval(interval(by_image(group, c))) for c, _ in KEY_COLUMNS]
                n = f"{len({r['image'] for r in group})} x {len({r['video_seed'] for r in group})}"
                lines.append("| " + " | ".join([name, f"{eps}/255", n, *cells]) + " |")
    lines += [
        "",
        "Mean [95% confidence interval]: a t-interval over images of each image's mean over its video seeds"
        " (the seeds of one image share its protection: the image is the unit; with one image, the seeds)."
        " PSNR, SSIM: guarded vs original photo (at the size it was guarded at). Flow ratio,"
        " change ratio: mean optical flow (Farneback) and mean 1 - SSIM of consecutive frames, video of the"
        " guarded photo / video of the original (same video seed): < 1 = frozen. Video PSNR, SSIM: per-frame,"
        " guarded video vs original video: low = ruined. Posted flow ratio: the same after both photos were"
        f" posted online ({POSTING}, as the app's \"Does it survive posting?\"). Seconds: protection"
        " wall time. Every column, per-frame arrays and the first seed's videos are in results.csv,"
        " per_frame.json and videos/.",
        "",
    ]
    others = [m for m in config.methods if m != CONTROL]
    if CONTROL in config.methods and others:
        header = ["method", "eps", "pairs", *[f"Δ {h}" for _, h in EFFECT_COLUMNS]]
        lines += [f"### Difference from the {CONTROL} control", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name in others:
            for eps in config.eps:
                diffs = {c: differences_from_control(rows, name, eps, c) for c, _ in EFFECT_COLUMNS}
                pairs = sum(len(v) for v in diffs[EFFECT_COLUMNS[0][0]].values())
                if pairs:
                    cells = [format_interval(interval(diffs[c]), mark_nonzero=True) for c, _ in EFFECT_COLUMNS]
                    lines.append("| " + " | ".join([name, f"{eps}/255", str(pairs), *cells]) + " |")
        lines += [
            "",
            f"Paired differences: each row minus the {CONTROL} row of the same image, eps and video seed (the"
            f" {CONTROL} control spends the full budget, +-eps on every pixel), averaged per image; mean [95% CI]"
            " as above. * = the interval excludes 0: the method differs from the control at the 5% level"
            " (two-sided paired t-test on the image means). No * = no measurable difference from noise.",
            "",
        ]
    else:
        lines += [f"The {CONTROL} control was not run: add it to --methods to compare each method with it.", ""]
    lines += [SKIPPED_SCORERS, ""]
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
            per_video = [c[key][quantity] for per_seed in report.curves.values() for c in per_seed.values()
                         if key in c]
            if per_video:
                ax.plot(range(1, len(per_video[0]) + 1), np.mean(per_video, axis=0), marker="o", label=label,
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
            styles = [("", "-")] + ([("posted_", "--")] if column == "flow_ratio" else [])
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
               title=f"solid: as guarded\n--: posted ({POSTING_SCALE:g}x,\nJPEG q{POSTING_QUALITY})",
               title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(out / "effect_vs_eps.png", dpi=90)
    plt.close(fig)


def _finite_mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
