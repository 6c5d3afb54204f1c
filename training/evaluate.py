"""Measure an SVD-format image-to-video model against its fidelity floors: on held-out images, at fixed seeds.

    python training/evaluate.py [--model guard/models/embedded] [--seeds 4] [--sweep-seeds 2]
        [--threads 2,1] [--only floor,motion,oracles,frames,timing] [--guidance MIN,MAX] [--json out.json]

Any folder in the stock diffusers SVD layout works: it is loaded by guard's own SVD target, with its
sizes and sampler settings from its guard_defaults.json (height, width, num_frames,
num_inference_steps, guidance), so every video here is made as `python -m guard animate` makes it
(same image preparation, same pipeline call), except that all F frames are decoded in one window
(animate decodes in windows of 8). Held-out images: the four of examples/ (astronaut, chelsea,
coffee, rocket) and matplotlib's sample_data/grace_hopper.jpg,
center-cropped to the model's aspect and resized to its size; none may be in the training data. The
video of (image, seed) uses torch.Generator().manual_seed(seed), seeds 0..S-1, so every condition is
compared on the same noise.

Flow is the mean Farneback optical-flow magnitude between consecutive frames, in px/frame
(guard.metrics.flow_per_frame: the number the README's tables and the app report). PSNR is
guard.metrics.psnr (8-bit, peak 255).

Sections (--only picks some; each prints its numbers as it goes):
  floor    decode floor: the static video of each image (its VAE latent, mode, scaled, repeated F
           times) through the VAE's temporal decoder; its flow is motion the model adds where there
           is none. Also the VAE round trip of the image (a ceiling for frame 0), and the image
           itself repeated F times with no model, whose flow must be 0.
  motion   bucket sweep: flow at motion_bucket_id 0, 30, 64, 127, 180, 255, mean +- std over
           images x seeds (--seeds at bucket 0 and the default bucket, which the fidelity table
           uses; --sweep-seeds at the others). At the default bucket also:
           - coherence: PSNR of every frame t+1 warped back onto frame t by the measured flow, vs
             frame t (MSE pooled over a video's frame pairs, mean over videos), printed next to the
             same PSNR without the warp: the gap is how much of the change the flow explains;
           - frame-0 PSNR against the (prepared) input image;
           - eta^2 = SS_between_images / SS_total of the per-video flow (one-way ANOVA, seeds as
             replicates): the share of the flow's variance the image explains. If only the seed
             mattered it would still be (images-1)/(videos-1) on average (0.21 at 5 x 4): printed too.
  oracles  every temporal_transformer_blocks[*].attn1 forced to a uniform map (1/F: a perfect
           Vid-Freeze-style suppression) or to the identity (no frame sees another) during the
           whole generation, default bucket, same seeds, against the normal videos.
  frames   the default bucket at 12 frames and at the model's default count (--sweep-seeds seeds).
  timing   one default generation in this process at each --threads count (the faster of 2 after a
           warm-up), and the whole `python -m guard animate examples/coffee.png -o x.mp4` process
           (a subprocess with OMP_NUM_THREADS set to that count; --model passed if not the default).
At the end: the fidelity table with its floors and goals. --json writes every number, and each video's.

Choosing a setting (--steps, --guidance) on the held-out images would tune the model to its own
test: --images validation measures six training photos instead (VALIDATION), for that choice.

Cost of a default run: 130 generations (5 images x (4 + 4 + 4 x 2 + 4 + 4 + 2), 10 of them at 12
frames), 5 VAE round trips, and 3 generations plus one animate process per --threads count; it prints
the count at the start and the time left as it goes. Measured on the 2-core development CPU, shared
with other jobs, with --threads 1: the old 128x128 model, 11.0 min (about 5 s a generation; 3.5 s on
a quiet machine). A random-weight build of the 192x256, 16-latent-channel config took 11 s a
generation on 1 thread on a quiet machine (17-19 s shared): about 25 min on 1 thread, an estimated
15 min on 2 free cores. --seeds 2 halves it; --only splits it into shorter runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import PIL.Image
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from guard import metrics  # noqa: E402
from guard.targets import load_target  # noqa: E402
from guard.targets.svd import is_temporal_self_attention  # noqa: E402

EXAMPLES = ("astronaut", "chelsea", "coffee", "rocket")  # examples/*.png; never in the training data
# training photos of the installed packages, for choosing sampler settings without looking at the held-out images
VALIDATION = ("china", "flower", "cheetah", "lion", "tower", "motorcycle_left")
BUCKETS = (0, 30, 64, 127, 180, 255)  # motion_bucket_id values of the sweep
FRAMES_CHECK = 12  # the frame-count check: a length inside the 8-14 the model is trained on
SECTIONS = ("floor", "motion", "oracles", "frames", "timing")


# ---------------------------------------------------------------------------------------------------
# images and videos


def held_out_images(target) -> dict[str, PIL.Image.Image]:
    """The five held-out images, prepared as guard prepares any input (center crop to the model's
    aspect, Lanczos resize to its height x width)."""
    import matplotlib.cbook

    paths = {name: os.path.join(ROOT, "examples", f"{name}.png") for name in EXAMPLES}
    paths["grace_hopper"] = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return {name: target.prepare_image(PIL.Image.open(path)) for name, path in paths.items()}


def validation_images(target) -> dict[str, PIL.Image.Image]:
    """Six training photos (scikit-learn's, gradio's, scikit-image's), prepared the same way: for
    choosing settings (--images validation); they are not held out, so they judge no model."""
    from training.data import load_pictures

    pictures = load_pictures()
    missing = [name for name in VALIDATION if name not in pictures]
    if missing:  # a smaller set would quietly change what a setting is chosen on
        raise SystemExit(f"evaluate.py: validation photos {', '.join(missing)} not found (they come with scikit-learn, "
                         "gradio and scikit-image: pip install -r requirements-test.txt)")
    return {name: target.prepare_image(PIL.Image.fromarray(pictures[name])) for name in VALIDATION}


def generate(target, image, seed: int, bucket: int, frames: int) -> np.ndarray:
    """(F, H, W, 3) uint8, as `guard animate` makes it, but decoded in one window of all F frames
    (guard's generate decodes in windows of 8, which would split a 12-frame video in two)."""
    return target.generate(image, seed=seed, motion_bucket_id=bucket, num_frames=frames,
                           decode_chunk_size=frames).frames


@torch.no_grad()
def static_video(target, image, frames: int) -> np.ndarray:
    """The still video of an image through the VAE: its latent (mode, scaled as the denoiser's
    latents are) repeated F times, decoded as the pipeline decodes a generated video."""
    z = target.encode_video(target.to_tensor(image)[:, None])  # (1, 1, C, h, w)
    video = target.pipe.decode_latents(z.repeat(1, frames, 1, 1, 1), frames, frames)  # vae.decode(z/s, num_frames=F)
    video = target.pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# measures (flow and PSNR are guard.metrics'; coherence warps with the same Farneback settings)


def coherence(video: np.ndarray) -> tuple[float, float]:
    """(warped, unwarped) PSNR in dB over the whole video: every frame t+1 warped back onto frame t
    by the Farneback flow t -> t+1, against frame t; and frame t+1 as it is, against frame t. The
    gap between the two is how much of the change between frames the flow explains."""
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video]
    h, w = gray[0].shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = []
    for t in range(len(video) - 1):
        if np.array_equal(gray[t], gray[t + 1]):  # as flow_per_frame: a repeated frame did not move
            warped.append(video[t + 1])
            continue
        flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **metrics.FARNEBACK)  # (H, W, 2)
        warped.append(cv2.remap(video[t + 1], gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE))
    return metrics.psnr(np.stack(warped), video[:-1]), metrics.psnr(video[1:], video[:-1])


def measure(video: np.ndarray, image) -> dict:
    warp, still = coherence(video)
    return dict(flow=float(metrics.flow_per_frame(video).mean()), warp_psnr=warp, unwarped_psnr=still,
                frame0_psnr=metrics.psnr(video[0], np.asarray(image)))


def eta_squared(groups: list[list[float]]) -> float:
    """One-way ANOVA effect size: SS_between_groups / SS_total. Groups = images, members = seeds."""
    values = np.concatenate(groups)
    grand = values.mean()
    ss_total = float(((values - grand) ** 2).sum())
    ss_between = float(sum(len(g) * (np.mean(g) - grand) ** 2 for g in groups))
    return ss_between / ss_total if ss_total > 0 else float("nan")


def summary(records: list[dict], key: str = "flow") -> dict:
    v = [r[key] for r in records]
    return dict(mean=float(np.mean(v)), std=float(np.std(v)), min=float(np.min(v)), max=float(np.max(v)), n=len(v))


# ---------------------------------------------------------------------------------------------------
# temporal attention oracles


class ForcedTemporalAttention:
    """An attention processor for temporal self-attention that ignores softmax(QK^T / sqrt(d)).

    "uniform": the map is 1/F, so every frame receives the mean over frames of the values;
    "identity": the map is I, so every frame receives its own value and no frame sees another.
    Both maps act alike on every head, so they apply to the whole value (B*H*W, F, C) unsplit."""

    def __init__(self, mode: str):
        assert mode in ("uniform", "identity"), mode
        self.mode = mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        assert encoder_hidden_states is None and attention_mask is None, "temporal attn1 is self-attention"
        value = attn.to_v(hidden_states)  # (B*H*W, F, C): one row of frames per spatial position
        if self.mode == "uniform":
            value = value.mean(dim=1, keepdim=True).expand_as(value)
        out = attn.to_out[1](attn.to_out[0](value))  # output projection, dropout
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def forced_temporal_attention(unet, mode: str):
    """Inside the block, every temporal_transformer_blocks[*].attn1 uses ForcedTemporalAttention."""
    saved = unet.attn_processors
    forced = ForcedTemporalAttention(mode)
    unet.set_attn_processor({k: forced if is_temporal_self_attention(k) else p for k, p in saved.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(dict(saved))  # set_attn_processor empties the dict it is given


# ---------------------------------------------------------------------------------------------------
# the runs


class Videos:
    """Generates and measures each (attention, bucket, frames, image, seed) video once."""

    def __init__(self, target, images, seeds, planned):
        self.target, self.images, self.seeds = target, images, seeds
        self.records: dict[tuple, dict] = {}
        self.planned, self.done, self.seconds = planned, 0, 0.0

    def get(self, bucket: int, frames: int, attention: str = "normal", n_seeds: int | None = None) -> list[dict]:
        """Records of the images x seeds (the first n_seeds of them if given) at one setting, image-major."""
        out, before = [], self.done
        for name, image in self.images.items():
            for seed in self.seeds[:n_seeds]:
                key = (attention, bucket, frames, name, seed)
                if key not in self.records:
                    t0 = time.perf_counter()
                    if attention == "normal":
                        video = generate(self.target, image, seed, bucket, frames)
                    else:
                        with forced_temporal_attention(self.target.unet, attention):
                            video = generate(self.target, image, seed, bucket, frames)
                    seconds = time.perf_counter() - t0
                    self.records[key] = dict(attention=attention, bucket=bucket, frames=frames, image=name,
                                             seed=seed, seconds=seconds, **measure(video, image))
                    self.done, self.seconds = self.done + 1, self.seconds + seconds
                out.append(self.records[key])
        if self.done == before:
            return out
        left = max(self.planned - self.done, 0) * self.seconds / max(self.done, 1)
        print(f"  [{attention}, bucket {bucket}, {frames} frames: {len(out)} videos; {self.done} generated, "
              f"{self.seconds / max(self.done, 1):.1f} s each, about {left / 60:.0f} min of the plan left]",
              file=sys.stderr, flush=True)
        return out


def by_image(records: list[dict], key: str = "flow") -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(r["image"], []).append(r[key])
    return groups


def section_floor(target, images, results):
    F = target.num_frames
    print(f"\n== decode floor: each image's latent repeated {F} times, through the VAE's temporal decoder")
    rows = {}
    for name, image in images.items():
        video = static_video(target, image, F)
        change = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # levels, per frame pair
        rows[name] = dict(flow=float(metrics.flow_per_frame(video).mean()),
                          vae_psnr=metrics.psnr(video[0], np.asarray(image)),  # the VAE's round trip
                          change_per_pair=[round(float(c), 2) for c in change])
        print(f"{name:13s} flow {rows[name]['flow']:.3f} px/frame   VAE round trip {rows[name]['vae_psnr']:.1f} dB   "
              f"mean |frame t+1 - frame t| per pair {rows[name]['change_per_pair']} levels")
    flows = [r["flow"] for r in rows.values()]
    sanity = max(float(metrics.flow_per_frame(np.stack([np.asarray(i)] * F)).mean()) for i in images.values())
    print(f"{'mean':13s} flow {np.mean(flows):.3f} px/frame (max {np.max(flows):.3f})   "
          f"VAE round trip {np.mean([r['vae_psnr'] for r in rows.values()]):.1f} dB (a ceiling for frame 0)")
    print(f"sanity: the image itself repeated {F} times, no model: flow {sanity:.3f} px/frame (must be 0)")
    results["floor"] = dict(per_image=rows, flow=float(np.mean(flows)), flow_max=float(np.max(flows)),
                            vae_psnr=float(np.mean([r["vae_psnr"] for r in rows.values()])), no_model_flow=sanity)


def section_motion(target, videos, sweep_seeds, results):
    F, default = target.num_frames, target.motion_bucket_id
    print(f"\n== bucket sweep: {F} frames, {target.num_inference_steps} steps, {len(videos.images)} images x "
          f"{len(videos.seeds)} seeds at buckets 0 and {default}, x {sweep_seeds} seeds at the others; flow in px/frame")
    print("bucket   flow mean +- std    min    max  videos")
    sweep = {}
    for b in sorted(set(BUCKETS) | {default}):
        s = sweep[b] = summary(videos.get(b, F, n_seeds=None if b in (0, default) else sweep_seeds))
        print(f"{b:5d}{'*' if b == default else ' '}   {s['mean']:.3f} +- {s['std']:.3f}   {s['min']:.3f}  {s['max']:.3f}  {s['n']:4d}")
    print("(* the default bucket)")

    records = videos.get(default, F)
    flows = by_image(records)
    print(f"\nat the default bucket {default}, per image (flow per seed {list(videos.seeds)} | mean; frame 0 vs input; warp PSNR):")
    for name, v in flows.items():
        mine = [r for r in records if r["image"] == name]
        print(f"{name:13s} {' '.join(f'{x:.2f}' for x in v)} | {np.mean(v):.2f}   frame 0 "
              f"{np.mean([r['frame0_psnr'] for r in mine]):.1f} dB   warp {np.mean([r['warp_psnr'] for r in mine]):.1f} dB")
    warp, unwarped, f0 = (summary(records, k) for k in ("warp_psnr", "unwarped_psnr", "frame0_psnr"))
    eta = eta_squared(list(flows.values()))
    chance = (len(flows) - 1) / (len(records) - 1)  # E[eta^2] if the image decided nothing (normal noise)
    print(f"coherence: frame t+1 warped back by the flow vs frame t {warp['mean']:.1f} dB (min {warp['min']:.1f}); "
          f"without the warp {unwarped['mean']:.1f} dB")
    print(f"frame 0 vs the input: {f0['mean']:.1f} dB (min {f0['min']:.1f})")
    if len(videos.seeds) > 1:
        print(f"share of the flow's variance the image explains (eta^2 over images x seeds): {eta:.2f} "
              f"({chance:.2f} expected if only the seed mattered)")
    else:
        print("share of the flow's variance the image explains: needs --seeds >= 2")
    results["motion"] = dict(sweep=sweep, default_bucket=default, warp_psnr=warp, unwarped_psnr=unwarped,
                             frame0_psnr=f0, eta_squared=eta if len(videos.seeds) > 1 else None,
                             eta_squared_chance=chance, per_image_flow=flows)


def section_oracles(target, videos, results):
    F, default = target.num_frames, target.motion_bucket_id
    print(f"\n== temporal attention forced during the whole generation (bucket {default}, same seeds; "
          f"every temporal_transformer_blocks[*].attn1)")
    normal = summary(videos.get(default, F))
    results["oracles"] = {}
    for mode in ("normal", "uniform", "identity"):
        records = videos.get(default, F, mode)
        s, w = summary(records), summary(records, "warp_psnr")
        results["oracles"][mode] = dict(flow=s, warp_psnr=w, ratio=s["mean"] / normal["mean"])
        print(f"{mode:9s} flow {s['mean']:.3f} +- {s['std']:.3f} px/frame ({s['mean'] / normal['mean']:.2f} of normal)   "
              f"warp PSNR {w['mean']:.1f} dB")


def section_frames(target, videos, sweep_seeds, results):
    default = target.motion_bucket_id
    print(f"\n== frame count (bucket {default}, {len(videos.images)} images x {sweep_seeds} seeds): the default "
          f"{target.num_frames} frames and {FRAMES_CHECK}")
    results["frames"] = {}
    for F in sorted({target.num_frames, FRAMES_CHECK}):
        records = videos.get(default, F, n_seeds=sweep_seeds)
        s, w, f0 = (summary(records, k) for k in ("flow", "warp_psnr", "frame0_psnr"))
        results["frames"][F] = dict(flow=s, warp_psnr=w, frame0_psnr=f0)
        print(f"{F:3d} frames  flow {s['mean']:.3f} +- {s['std']:.3f} px/frame   warp PSNR {w['mean']:.1f} dB   "
              f"frame 0 {f0['mean']:.1f} dB")


def section_timing(target, images, threads, model, results):
    print(f"\n== CPU timing ({target.num_frames} frames, {target.num_inference_steps} steps, {target.height}x{target.width})")
    image, measured = images["coffee"], torch.get_num_threads()
    results["timing"] = {}
    for n in threads:
        torch.set_num_threads(n)
        generate(target, image, 0, target.motion_bucket_id, target.num_frames)  # warm-up
        gen = []
        for seed in range(2):
            t0 = time.perf_counter()
            generate(target, image, seed, target.motion_bucket_id, target.num_frames)
            gen.append(time.perf_counter() - t0)
        # the whole CLI process: interpreter start, imports, loading the model, generation, mp4
        out = os.path.join(tempfile.mkdtemp(), "x.mp4")
        cmd = [sys.executable, "-m", "guard", "animate", "examples/coffee.png", "-o", out]
        if os.path.realpath(model) != os.path.realpath(os.path.join(ROOT, "guard", "models", "embedded")):
            cmd += ["--model", model]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(n)}, capture_output=True, text=True)
        animate = time.perf_counter() - t0
        if run.returncode:
            print(run.stderr[-2000:], file=sys.stderr)
        results["timing"][n] = dict(generation=gen, generation_min=min(gen), animate_process=animate,
                                    animate_ok=run.returncode == 0, animate_stdout=run.stdout.strip())
        print(f"{n} thread{'s' if n > 1 else ' '}: one generation {min(gen):.2f} s (of "
              f"{', '.join(f'{t:.2f}' for t in gen)});  `python -m guard animate examples/coffee.png -o x.mp4` "
              f"{animate:.1f} s as a whole process{'' if run.returncode == 0 else ' (FAILED)'}")
    torch.set_num_threads(measured)


def issue_table(results):
    """The fidelity table: (what, measured, unit, floor, goal, passes floor?)."""
    rows = []
    if "floor" in results:
        v = results["floor"]["flow"]
        rows.append(("decode floor: static video through the VAE, flow", f"{v:.3f} px/frame", "<= 0.03", "<= 0.01", v <= 0.03))
    m = results.get("motion")
    if m:
        b0, bd = m["sweep"][0]["mean"], m["sweep"][m["default_bucket"]]["mean"]
        rows.append(("bucket 0, flow", f"{b0:.3f} px/frame", "<= 0.08", "<= 0.03", b0 <= 0.08))
        rows.append((f"default bucket ({m['default_bucket']}), flow", f"{bd:.3f} px/frame", ">= 1.0", ">= 2", bd >= 1.0))
        rows.append(("  coherence: t+1 warped back vs t (unwarped)", f"{m['warp_psnr']['mean']:.1f} dB ({m['unwarped_psnr']['mean']:.1f})",
                     ">= 30", "", m["warp_psnr"]["mean"] >= 30))
        rows.append(("frame 0 vs the input", f"{m['frame0_psnr']['mean']:.1f} dB", ">= 26", ">= 30", m["frame0_psnr"]["mean"] >= 26))
        if m["eta_squared"] is not None:
            rows.append(("share of flow variance the image explains", f"{m['eta_squared']:.2f}", "reported", "> 0.5", None))
    for mode in ("uniform", "identity"):
        if mode in results.get("oracles", {}):
            o = results["oracles"][mode]
            rows.append((f"{mode} temporal attention, flow (x normal)", f"{o['flow']['mean']:.3f} ({o['ratio']:.2f}x)", "reported", "", None))
    for n, t in results.get("timing", {}).items():
        rows.append((f"`guard animate` process, {n} thread{'s' if n > 1 else ''}", f"{t['animate_process']:.1f} s",
                     "<= 15 (2 cores)", "<= 10", t["animate_process"] <= 15 if n == 2 else None))
    print("\n== the fidelity table")
    print(f"{'property':50s} {'measured':20s} {'floor':16s} {'goal':8s}")
    for what, value, floor, goal, ok in rows:
        mark = "" if ok is None else ("ok" if ok else "misses the floor")
        print(f"{what:50s} {value:20s} {floor:16s} {goal:8s} {mark}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "guard", "models", "embedded"), help="an SVD-format folder")
    p.add_argument("--seeds", type=int, default=4, help="videos per image and setting, seeds 0..N-1 (default 4)")
    p.add_argument("--sweep-seeds", type=int, default=2, help="seeds of the buckets of the sweep outside "
                   "the fidelity table (30, 64, 180, 255) and of the frame-count check (default 2, at most --seeds)")
    p.add_argument("--threads", default="2,1", help="comma-separated torch thread counts: the measurements run "
                   "with the first, the timing section times each (default 2,1; on a shared CPU use 1)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections, from {','.join(SECTIONS)}")
    p.add_argument("--guidance", default=None, help="MIN,MAX classifier-free guidance over the frames instead of "
                   "the model's own (guard_defaults.json; the pipeline's default is 1,3)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps instead of the model's own (guard_defaults.json)")
    p.add_argument("--images", choices=("held-out", "validation"), default="held-out", help="the five held-out images "
                   "(default), or six training photos to choose settings on (training/evaluate.py VALIDATION)")
    p.add_argument("--json", default=None, help="also write every number (and each video's) to this file")
    args = p.parse_args()
    guidance = None
    if args.guidance:
        try:
            low, high = (float(g) for g in args.guidance.split(","))
        except ValueError:
            p.error(f"--guidance takes two numbers, MIN,MAX, got {args.guidance!r}")
        guidance = {"min_guidance_scale": low, "max_guidance_scale": high}
        if low > high:  # the pipeline guides only when MAX > 1, rising from MIN at frame 0 to MAX at the last
            p.error(f"--guidance MIN,MAX must have MIN <= MAX (the pipeline's guidance rises over the frames), got {args.guidance}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    sections = args.only.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    assert set(sections) <= set(SECTIONS), f"--only takes {SECTIONS}"
    torch.set_num_threads(threads[0])
    torch.set_flush_denormal(True)
    start = time.perf_counter()

    target = load_target(args.model)
    if guidance:
        target.guidance = guidance
    if args.steps is not None:
        target.num_inference_steps = args.steps
    images = held_out_images(target) if args.images == "held-out" else validation_images(target)
    seeds = list(range(args.seeds))
    F = target.num_frames
    sweep_seeds, default = min(args.sweep_seeds, args.seeds), target.motion_bucket_id
    plan = {}  # (attention, bucket, frames) -> seeds, for every video the sections need (for the ETA)
    for b in BUCKETS + (default,) if "motion" in sections else ():
        plan[("normal", b, F)] = args.seeds if b in (0, default) else sweep_seeds
    for mode in ("normal", "uniform", "identity") if "oracles" in sections else ():
        plan[(mode, default, F)] = args.seeds
    for n in (F, FRAMES_CHECK) if "frames" in sections else ():
        plan[("normal", default, n)] = max(plan.get(("normal", default, n), 0), sweep_seeds)
    planned = sum(plan.values()) * len(images)
    print(f"model {args.model}: {target.height}x{target.width} (H x W), {F} frames, {target.num_inference_steps} steps, "
          f"fps {target.fps}, default motion_bucket_id {target.motion_bucket_id}, noise_aug {target.noise_aug_strength}, "
          f"{target.vae.config.latent_channels} latent channels, guidance {target.guidance}")
    print(f"{args.images} images: {', '.join(images)}; seeds {seeds} (torch.Generator().manual_seed(seed) per video); "
          f"seeds {seeds[:sweep_seeds]} at the other buckets and the frame check; torch threads {torch.get_num_threads()}; sections {','.join(sections)}; {planned} generations planned")
    results = dict(model=args.model, height=target.height, width=target.width, num_frames=F,
                   num_inference_steps=target.num_inference_steps, default_bucket=target.motion_bucket_id,
                   guidance=target.guidance, images=list(images), seeds=seeds, sweep_seeds=sweep_seeds, threads=torch.get_num_threads())
    videos = Videos(target, images, seeds, planned)

    if "floor" in sections:
        section_floor(target, images, results)
    if "motion" in sections:
        section_motion(target, videos, sweep_seeds, results)
    if "oracles" in sections:
        section_oracles(target, videos, results)
    if "frames" in sections:
        section_frames(target, videos, sweep_seeds, results)
    if "timing" in sections:
        section_timing(target, images, threads, args.model, results)
    issue_table(results)

    results["videos"] = list(videos.records.values())
    results["runtime_s"] = time.perf_counter() - start
    print(f"\n{videos.done} videos generated; total {results['runtime_s'] / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
