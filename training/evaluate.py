"""Measure the shipped embedded model on the held-out images, on the CPU, from the saved folder.

    python training/evaluate.py [--model guard/models/embedded] [--seeds 2] [--json out.json]

Prints, for the four held-out images (skimage astronaut, chelsea, coffee, rocket) at the default
settings (guard_defaults.json):
- motion: mean Farneback optical-flow magnitude, px/frame, per motion_bucket_id;
- coherence: PSNR of frame t+1 against frame t warped by the measured flow (high = the change
  between frames is motion, not flicker);
- frame-0 PSNR against the input image;
- the temporal-attention oracle: the same videos with every temporal attn1 map forced uniform
  (a perfect Vid-Freeze-style suppression), to show how much motion goes through temporal attention;
- CPU time of one default generation and of one attack step (VAE encoder + CLIP + UNet forward with
  every temporal attention map materialised, backward to the image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.attention import TemporalAttnProcessor, set_temporal_processor  # noqa: E402
from training.train import clip_input  # noqa: E402

HELD_OUT = ("astronaut", "chelsea", "coffee", "rocket")
BUCKETS = (30, 127, 220)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_images(size: int) -> dict[str, PIL.Image.Image]:
    """Center-cropped squares, resized to the model's resolution."""
    import skimage.data

    out = {}
    for name in HELD_OUT:
        img = PIL.Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out[name] = img.resize((size, size), PIL.Image.BICUBIC)
    return out


def farneback(frames: np.ndarray) -> list[np.ndarray]:
    """(F, H, W, 3) uint8 -> F-1 flow fields (H, W, 2), frame t -> t+1."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return [cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0) for i in range(len(gray) - 1)]


def motion_stats(frames: np.ndarray) -> dict:
    flows = farneback(frames)
    mag = float(np.mean([np.linalg.norm(f, axis=-1).mean() for f in flows]))
    h, w = frames.shape[1:3]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warp_psnr = []
    for t, f in enumerate(flows):  # backward-warp frame t+1 onto frame t: coherent motion predicts it well
        warped = cv2.remap(frames[t + 1], gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warp_psnr.append(psnr(warped, frames[t]))
    return {"flow": mag, "warp_psnr": float(np.mean(warp_psnr))}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def load(model_dir: str):
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    with open(os.path.join(model_dir, "guard_defaults.json")) as f:
        defaults = json.load(f)
    return pipe, defaults


def generate(pipe, defaults, image, bucket, seed) -> np.ndarray:
    out = pipe(
        image,
        height=defaults["height"],
        width=defaults["width"],
        num_frames=defaults["num_frames"],
        num_inference_steps=defaults["num_inference_steps"],
        motion_bucket_id=bucket,
        decode_chunk_size=defaults["num_frames"],
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).frames[0]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)  # (F, H, W, 3)


def attack_step_time(pipe, defaults, image, repeats=5) -> float:
    """Median seconds of one attack step: encoders + UNet forward with the temporal maps, backward."""
    unet, vae, enc = pipe.unet, pipe.vae, pipe.image_encoder
    for m in (unet, vae, enc):
        m.requires_grad_(False)
    proc = TemporalAttnProcessor("store")
    saved = unet.attn_processors
    set_temporal_processor(unet, proc)
    x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255
    Fr = defaults["num_frames"]
    sigma = torch.tensor([1.0])
    times = []
    for i in range(repeats + 1):
        proc.maps.clear()
        t0 = time.perf_counter()
        xa = x.clone().requires_grad_(True)
        latent = vae.encode(xa * 2 - 1).latent_dist.mode()  # (1, 4, h, w), unscaled as in the pipeline
        emb = enc(clip_input(xa * 2 - 1)).image_embeds[:, None]
        noisy = torch.randn(1, Fr, *latent.shape[1:]) * sigma
        inp = torch.cat([noisy / (sigma**2 + 1).sqrt(), latent[:, None].expand(-1, Fr, -1, -1, -1)], 2)
        unet(inp, 0.25 * sigma.log(), encoder_hidden_states=emb, added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]))
        loss = sum(m.square().sum(-1).mean() for m in proc.maps)  # Vid-Freeze's ||A||_F^2 (mean over rows)
        loss.backward()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    unet.set_attn_processor(dict(saved))
    return statistics.median(times), len(proc.maps)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "guard", "models", "embedded"))
    p.add_argument("--seeds", type=int, default=2, help="videos per image and bucket")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--save-videos", default=None, help="folder for a PNG strip of each bucket-127 video")
    p.add_argument("--only", choices=("oracles", "timing"), default=None, help="run one section alone")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice). On a "
                   "shared machine, more threads than free cores makes OpenMP crawl: time with 1 there")
    args = p.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe, defaults = load(args.model)
    size = defaults["height"]
    images = held_out_images(size)
    print(f"model {args.model}: {defaults}; torch threads {torch.get_num_threads()}")
    results = {"defaults": defaults, "per_image": {}, "buckets": {}}

    if args.only == "timing":
        return timings(pipe, defaults, images, results, args)
    if args.only == "oracles":
        oracles(pipe, defaults, images, results, args)
        return timings(pipe, defaults, images, results, args)

    # 1. Motion per bucket, frame-0 fidelity.
    per_bucket = {b: [] for b in BUCKETS}
    f0 = []
    for name, img in images.items():
        ref = np.asarray(img)
        for b in BUCKETS:
            for seed in range(args.seeds):
                frames = generate(pipe, defaults, img, b, seed)
                stats = motion_stats(frames)
                stats["frame0_psnr"] = psnr(frames[0], ref)
                per_bucket[b].append(stats)
                f0.append(stats["frame0_psnr"])
                results["per_image"].setdefault(name, {}).setdefault(str(b), []).append(stats)
                if args.save_videos and b == 127 and seed == 0:
                    os.makedirs(args.save_videos, exist_ok=True)
                    PIL.Image.fromarray(np.concatenate([ref, *frames], 1)).save(os.path.join(args.save_videos, f"{name}.png"))
        line = "  ".join(f"b{b} flow {np.mean([s['flow'] for s in results['per_image'][name][str(b)]]):.2f}" for b in BUCKETS)
        print(f"{name:10s} {line}  frame0 PSNR {np.mean([s['frame0_psnr'] for b in BUCKETS for s in results['per_image'][name][str(b)]]):.1f} dB")
    for b in BUCKETS:
        flows = [s["flow"] for s in per_bucket[b]]
        results["buckets"][b] = {"flow": float(np.mean(flows)), "flow_sd": float(np.std(flows)),
                                 "warp_psnr": float(np.mean([s["warp_psnr"] for s in per_bucket[b]]))}
        print(f"motion_bucket_id {b:3d}: flow {np.mean(flows):.2f} +- {np.std(flows):.2f} px/frame, "
              f"warp PSNR {results['buckets'][b]['warp_psnr']:.1f} dB (n={len(flows)})")
    results["frame0_psnr"] = float(np.mean(f0))
    still = {n: motion_stats(np.stack([np.asarray(i)] * defaults["num_frames"])) for n, i in images.items()}
    print(f"frame-0 PSNR vs input: {np.mean(f0):.1f} dB (min {np.min(f0):.1f}); static video flow "
          f"{np.mean([s['flow'] for s in still.values()]):.2f} px/frame")

    oracles(pipe, defaults, images, results, args)
    timings(pipe, defaults, images, results, args)


def oracles(pipe, defaults, images, results, args):
    # 2. Oracles on the temporal attention, same seeds, default bucket: "uniform" is a perfect
    #    Vid-Freeze-style suppression; "identity" cuts every exchange between frames (with the
    #    temporal convolutions off, what moves then comes from each frame alone).
    if results["per_image"]:
        normal = [s["flow"] for n in images for s in results["per_image"][n]["127"]]
    else:
        normal = [motion_stats(generate(pipe, defaults, img, 127, seed))["flow"] for img in images.values() for seed in range(args.seeds)]
    saved = pipe.unet.attn_processors
    for mode in ("uniform", "identity"):
        set_temporal_processor(pipe.unet, TemporalAttnProcessor(mode))
        forced = [motion_stats(generate(pipe, defaults, img, 127, seed)) for img in images.values() for seed in range(args.seeds)]
        pipe.unet.set_attn_processor(dict(saved))  # set_attn_processor empties the dict it is given
        results[f"{mode}_attention"] = {"flow_normal": float(np.mean(normal)), "flow": float(np.mean([u["flow"] for u in forced])),
                                        "warp_psnr": float(np.mean([u["warp_psnr"] for u in forced]))}
        print(f"temporal attention forced {mode} (bucket 127): flow {results[f'{mode}_attention']['flow']:.2f} "
              f"vs {np.mean(normal):.2f} px/frame normal (warp PSNR {results[f'{mode}_attention']['warp_psnr']:.1f} dB)")


def timings(pipe, defaults, images, results, args):
    # 3. CPU timings.
    img = images["astronaut"]
    gen = []
    for i in range(4):
        t0 = time.perf_counter()
        generate(pipe, defaults, img, 127, i)
        gen.append(time.perf_counter() - t0)
    step, n_maps = attack_step_time(pipe, defaults, img)
    results["cpu_seconds"] = {"threads": torch.get_num_threads(), "generation_median": statistics.median(gen[1:]), "generation_min": min(gen[1:]), "attack_step_median": step}
    print(f"CPU ({torch.get_num_threads()} threads): generation {statistics.median(gen[1:]):.2f} s median, {min(gen[1:]):.2f} s min "
          f"({defaults['num_frames']} frames, {defaults['num_inference_steps']} steps, CFG); "
          f"attack step {step:.3f} s median ({n_maps} temporal maps materialised)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
