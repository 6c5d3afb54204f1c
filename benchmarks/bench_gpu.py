"""Speed and memory of the real architectures, on a GPU, with random weights (no hub needed).

Builds full-size SVD-XT (25 frames, 576 x 1024) and CogVideoX-5B-I2V (49 frames, 480 x 720) in bf16
with random weights (timing depends on shapes, not on weight values) and prints:
  - generation: the unchanged diffusers pipeline, seconds (CogVideoX: a few steps timed, the default
    50 extrapolated and labelled so);
  - one attack-shaped step: loss on the temporal attention maps + the denoiser output, gradient to
    the image; seconds and peak GPU memory;
  - with --protect: protection cost per method for the reference and the fast settings
    (guard/presets.py), run through `guard.jobs` as the app runs it: frames attacked, seconds per step
    and setup seconds (`Protection.step_seconds`, `Protection.setup_seconds`), steps, total, peak
    memory. Totals are setup + steps x (mean of --timed-steps timed steps), labelled "est." when
    extrapolated.
    For CogVideoX every row also counts the transformer calls whose positional embedding differs from
    generation's (diffusers' sin-cos substitution at another frame count): it must read 0.

    python benchmarks/bench_gpu.py --models svd-xt,cogvideox [--protect] [--timed-steps 3]
    python benchmarks/bench_gpu.py --models cogvideox --protect --skip-generation --methods vidfreeze,i2vguard
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def random_svd_xt(device, dtype):
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from guard.targets.svd import SVDTarget

    with torch.device(device):
        # stabilityai/stable-video-diffusion-img2vid-xt configs (UNet defaults are SVD's)
        unet = UNetSpatioTemporalConditionModel(sample_size=96, num_frames=25).to(dtype)
        vae = AutoencoderKLTemporalDecoder(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                           latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 4).to(dtype)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
            patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")).to(dtype)
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet, scheduler=scheduler,
                                        feature_extractor=CLIPImageProcessor(crop_size=224, size=224))
    pipe.set_progress_bar_config(disable=True)
    return SVDTarget(pipe.to(device), name="svd-xt (random weights)")  # .to: legacy torch.Tensor() buffers


def random_cogvideox(device, dtype):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from guard.targets.cogvideox import CogVideoXTarget, _tiny_tokenizer, tiny_cogvideox

    with torch.device(device):
        # THUDM/CogVideoX-5b-I2V transformer and VAE configs
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=48, attention_head_dim=64, in_channels=32, out_channels=16, num_layers=42,
            text_embed_dim=4096, time_embed_dim=512, sample_frames=49, sample_height=60, sample_width=90,
            use_learned_positional_embeddings=True, use_rotary_positional_embeddings=True).to(dtype)
        vae = AutoencoderKLCogVideoX(latent_channels=16, scaling_factor=0.7).to(dtype)
        # The T5-XXL text encoder runs once per prompt, outside every timed loop: a 1-layer stand-in
        # with the real 4096-wide output keeps the transformer's inputs real-shaped.
        tokenizer = _tiny_tokenizer(["the", "scene"])
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=4096, d_kv=8, d_ff=64,
                                               num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                                               feed_forward_proj="gated-gelu")).to(dtype)
    pipe = CogVideoXImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                         transformer=transformer, scheduler=tiny_cogvideox().scheduler)
    pipe.set_progress_bar_config(disable=True)
    return CogVideoXTarget(pipe.to(device), name="cogvideox-5b-i2v (random weights)")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib():
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def reset():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def photo(target):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:target.height, 0:target.width] / max(target.height, target.width)
    rgb = np.stack([np.sin(7 * x), np.cos(5 * y + 3 * x), np.sin(9 * x * y)], -1) * 0.4 + 0.5
    rgb += rng.normal(0, 0.05, rgb.shape)
    return PIL.Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def bench_generation(target, steps):
    reset()
    t = time.perf_counter()
    video = target.generate(photo(target), seed=0, num_inference_steps=steps)
    sync()
    return time.perf_counter() - t, video.frames.shape, peak_gib()


def bench_attack_step(target, repeats=2):
    """Loss on temporal attention + denoiser output, gradient to the image (what every method does)."""
    from guard.methods.base import attention_energy, static_video_latents

    x = target.to_tensor(photo(target))
    g = torch.Generator(target.device).manual_seed(0)
    reference = static_video_latents(target, x, target.num_frames)
    times = []
    reset()
    for i in range(repeats + 1):
        sync()
        t = time.perf_counter()
        x_adv = x.clone().requires_grad_(True)
        level = target.sample_noise_level(1, g)
        noisy = target.add_noise(reference, torch.randn(reference.shape, generator=g, device=x.device,
                                                        dtype=reference.dtype), level)
        with target.capture_attention() as maps:
            _, x0 = target.denoise(noisy, level, target.condition(x_adv, g))
        loss = attention_energy(maps) + x0.float().pow(2).mean()
        (grad,) = torch.autograd.grad(loss, x_adv)
        sync()
        if i:  # the first call warms up kernels
            times.append(time.perf_counter() - t)
        assert torch.isfinite(grad).all()
    return float(np.mean(times)), peak_gib(), len(maps)


def bench_protection(target, method_name, preset, timed_steps):
    """Setup time (clean references, V0) and mean step time of a protection; total = setup + steps x step."""
    from guard.jobs import Job, protect_photo

    job = Job(method=method_name, preset=preset, seed=0)
    method, config = job.build(target)  # the preset's steps and parameters on this model
    steps = config.steps
    reset()
    n = min(steps, timed_steps)
    with positional_check(target) as substituted:
        result = protect_photo(target, photo(target), dataclasses.replace(job, steps=n))
    per_step = float(np.mean(result.step_seconds[1:] or result.step_seconds or [0.0]))  # the first step warms up
    return dict(steps=steps, per_step=per_step, setup=result.setup_seconds, peak=peak_gib(),
                total=result.setup_seconds + steps * per_step, estimated=n < steps, params=changed(method),
                frames=getattr(method, "frames", None) or target.num_frames,
                substituted=substituted)


def changed(method) -> dict:
    """The method's parameters that differ from its defaults (what the preset sets)."""
    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method) if getattr(method, f.name) != f.default}


@contextlib.contextmanager
def positional_check(target):
    """Counts CogVideoX transformer calls that substitute a sin-cos positional embedding for the learned
    one (another frame count than the model's); yields a list whose len() is that count ("-" for SVD)."""
    embed = getattr(getattr(target, "transformer", None), "patch_embed", None)
    if embed is None:
        yield "-"
        return
    calls, make = [], embed._get_positional_embeddings
    embed._get_positional_embeddings = lambda *a, **k: calls.append(1) or make(*a, **k)
    try:
        yield calls
    finally:
        del embed._get_positional_embeddings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="svd-xt,cogvideox")
    parser.add_argument("--gen-steps", default="svd-xt=25,cogvideox=3",
                        help="denoising steps timed per model (the rest is extrapolated)")
    parser.add_argument("--protect", action="store_true", help="also time protections (reference vs fast)")
    parser.add_argument("--methods", default="vidfreeze,i2vguard,photoguard")
    parser.add_argument("--presets", default="reference,fast", help="comma-separated: reference, fast")
    parser.add_argument("--timed-steps", type=int, default=3)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks this script runs")
    args = parser.parse_args()
    if args.smoke:
        from guard.targets import load_target

        device, dtype = "cpu", torch.float32
        builders = {"svd-xt": lambda d, t: load_target("tiny-svd"), "cogvideox": lambda d, t: load_target("tiny-cogvideox")}
        print("# smoke run: tiny random models on the CPU (numbers mean nothing)")
    else:
        assert torch.cuda.is_available(), "this benchmark needs a GPU (or --smoke)"
        device, dtype = "cuda", torch.bfloat16
        builders = {"svd-xt": random_svd_xt, "cogvideox": random_cogvideox}
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, random weights", flush=True)
    gen_steps = dict(kv.split("=") for kv in args.gen_steps.split(","))
    for name in args.models.split(","):
        t = time.perf_counter()
        target = builders[name](device, dtype)
        print(f"\n## {target.name}: {target.num_frames} frames {target.height}x{target.width}, "
              f"{target.num_inference_steps} default steps (built in {time.perf_counter() - t:.0f} s)", flush=True)
        if not args.skip_generation:
            steps = int(gen_steps.get(name, target.num_inference_steps))
            seconds, shape, peak = bench_generation(target, steps)
            line = f"generation, {steps} steps with CFG + decode: {seconds:.1f} s, peak {peak:.1f} GiB, frames {shape}"
            if steps < target.num_inference_steps:
                one, _, _ = bench_generation(target, 1)
                per = (seconds - one) / (steps - 1)
                line += (f"; per step {per:.2f} s -> est. {one + per * (target.num_inference_steps - 1):.0f} s "
                         f"at the default {target.num_inference_steps} steps")
            print(line, flush=True)
        seconds, peak, n_maps = bench_attack_step(target)
        print(f"attack step (attention + denoiser loss, grad to image, checkpointing {target.checkpointing}): "
              f"{seconds:.2f} s, peak {peak:.1f} GiB, {n_maps} attention maps", flush=True)
        if args.protect:
            print("| method | settings | frames | steps | s/step | setup s | total s | peak GiB | pos. emb. swaps |")
            print("|---|---|---|---|---|---|---|---|---|")
            for method_name in args.methods.split(","):
                for preset in args.presets.split(","):
                    r = bench_protection(target, method_name, preset, args.timed_steps)
                    est = " (est.)" if r["estimated"] else ""
                    swaps = r["substituted"] if isinstance(r["substituted"], str) else len(r["substituted"])
                    print(f"| {method_name} | {preset} {r['params']} | {r['frames']} | {r['steps']} | "
                          f"{r['per_step']:.2f} | {r['setup']:.1f} | {r['total']:.1f}{est} | {r['peak']:.1f} | "
                          f"{swaps} |", flush=True)
        del target
        reset()


if __name__ == "__main__":
    main()
