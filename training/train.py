"""Train the embedded I2V model (a small SVD) on procedural clips, on one GPU.

    python training/train.py --work /root/embedded_run --vae-steps 3000 --unet-steps 8000

Two stages, both resumable from `--work` (full fp32 state, written every `--save-every` seconds):
1. VAE (AutoencoderKLTemporalDecoder): L1 + MSE + image-gradient L1 on clip frames, tiny KL.
   Then scaling_factor = 1 / std of the latents, as SD/SVD did.
2. UNet + image encoder, SVD's recipe: EDM lognormal noise levels, v-prediction with SVD's
   preconditioning, first-frame conditioning (CLIP embedding by cross-attention + VAE latent of the
   noise-augmented first frame concatenated on channels), added_time_ids = [fps - 1,
   motion_bucket_id, noise_aug_strength], conditioning dropout for classifier-free guidance.

`--export DIR` writes a compact fp16 copy (every save, atomically) that training/export.py turns
into the diffusers folder; it is small enough to come back from the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.data import ClipRenderer, load_pictures, picture_bank  # noqa: E402
from training.model import ModelConfig, build_image_encoder, build_unet, build_vae, count_params  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as SVD's feature_extractor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FPS_ID = 6  # the pipeline passes fps - 1 and defaults to fps=7; motion here is per frame, not per second
P_MEAN, P_STD = 0.7, 1.6  # SVD's lognormal noise-level distribution (log sigma ~ N(0.7, 1.6^2))
COND_AUG_MEAN, COND_AUG_STD = -3.0, 0.5  # SVD's conditioning noise: log(noise_aug) ~ N(-3, 0.5^2)
CFG_DROPOUT = 0.1  # drop image embedding and image latent together: the pipeline's uncond zeros both


def log(msg: str, work: str) -> None:
    print(msg, flush=True)
    with open(os.path.join(work, "log.txt"), "a") as f:
        f.write(msg + "\n")


def freeze_temporal_convolutions(unet) -> int:
    """Make every temporal resnet an identity: zero and freeze its last (3x1x1) convolution.

    Design choice: frames then exchange information only through temporal attention (attn1 of the
    temporal transformer blocks), so motion has to be carried there, as the attention attacks
    (Vid-Freeze, I2VGuard's L_att) assume of SVD. A first probe with trainable temporal convolutions
    put most motion into them. The layers stay in the weights, so the folder is a stock SVD UNet.
    """
    n = 0
    for name, module in unet.named_modules():
        if name.endswith("temporal_res_block"):
            torch.nn.init.zeros_(module.conv2.weight)
            torch.nn.init.zeros_(module.conv2.bias)
            module.conv2.requires_grad_(False)
            module.conv1.requires_grad_(False)  # its output is multiplied by zero: no gradient anyway
            n += 1
    return n


def clip_input(frame: torch.Tensor) -> torch.Tensor:
    """The pipeline's CLIP branch on a tensor in [-1, 1]: antialiased resize to 224, then mean/std."""
    x = _resize_with_antialiasing(frame, (224, 224))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def save_state(path: str, state: dict) -> None:
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def export_compact(export_dir: str, cfg: ModelConfig, vae, unet, image_encoder, meta: dict) -> None:
    """fp16 safetensors, each file < 16 MiB, written to a temp folder and swapped in."""
    tmp = export_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    half = lambda m: {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in m.state_dict().items()}  # noqa: E731
    save_file(half(vae), os.path.join(tmp, "vae.safetensors"))
    save_file(half(image_encoder), os.path.join(tmp, "image_encoder.safetensors"))
    sd = half(unet)
    keys = sorted(sd)
    shards, current, size = [], {}, 0
    for k in keys:  # split the UNet into shards below 15 MB
        nbytes = sd[k].numel() * 2
        if current and size + nbytes > 15_000_000:
            shards.append(current)
            current, size = {}, 0
        current[k] = sd[k]
        size += nbytes
    shards.append(current)
    for i, shard in enumerate(shards):
        save_file(shard, os.path.join(tmp, f"unet-{i}.safetensors"))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump({"model_config": cfg.to_dict(), "unet_shards": len(shards), **meta}, f, indent=1)
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(tmp, export_dir)


def train_vae(args, cfg, renderer, vae, work, device):
    path = os.path.join(work, "vae.pt")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step = init_step
    if os.path.exists(path):
        state = torch.load(path, map_location=device)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(f"vae: resumed at step {step}", work)
    clips = max(1, args.vae_batch // cfg.num_frames)
    t0, last_save = time.time(), time.time()
    while step < args.vae_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 200)
        with torch.no_grad():
            video, _ = renderer(clips)
        x = video.flatten(0, 1)  # (B*F, 3, R, R) in [-1, 1]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample(), num_frames=cfg.num_frames).sample.float()
        l1 = (rec - x).abs().mean()
        mse = (rec - x).square().mean()
        grad = lambda y: (y[..., 1:, :] - y[..., :-1, :], y[..., :, 1:] - y[..., :, :-1])  # noqa: E731
        edge = sum((a - b).abs().mean() for a, b in zip(grad(rec), grad(x)))
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        loss = l1 + mse + 0.5 * edge + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            psnr = 10 * math.log10(4.0 / mse.item())  # signal range 2 ([-1, 1])
            log(f"vae step {step} loss {loss.item():.4f} l1 {l1.item():.4f} psnr {psnr:.2f} kl {kl.item():.3f} "
                f"{step / (time.time() - t0 + 1e-9):.1f} it/s (this run)", work)
        if time.time() - last_save > args.save_every or step == args.vae_steps:
            save_state(path, {"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step})
            last_save = time.time()
    return step


def train_decoder(args, cfg, renderer, vae, work):
    """Fine-tune the decoder with the encoder frozen: sharper frames, same latent space."""
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.vae_lr, weight_decay=0.0)
    clips = max(1, args.vae_batch // cfg.num_frames)
    t0 = time.time()
    for step in range(args.decoder_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.decoder_steps, args.vae_lr, 100)
        with torch.no_grad(), torch.autocast(renderer.device.type, dtype=torch.bfloat16):
            video, _ = renderer(clips)
            x = video.flatten(0, 1)
            z = vae.encode(x).latent_dist.sample()
        with torch.autocast(renderer.device.type, dtype=torch.bfloat16):
            rec = vae.decode(z, num_frames=cfg.num_frames).sample.float()
        mse = (rec - x).square().mean()
        grad = lambda y: (y[..., 1:, :] - y[..., :-1, :], y[..., :, 1:] - y[..., :, :-1])  # noqa: E731
        loss = (rec - x).abs().mean() + mse + 0.5 * sum((a - b).abs().mean() for a, b in zip(grad(rec), grad(x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 200 == 0:
            log(f"decoder step {step + 1} loss {loss.item():.4f} psnr {10 * math.log10(4.0 / mse.item()):.2f} "
                f"{(step + 1) / (time.time() - t0):.1f} it/s", work)


@torch.no_grad()
def latent_std(vae, renderer, device, n=8):
    vals = []
    for _ in range(n):
        video, _ = renderer(16)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            vals.append(vae.encode(video.flatten(0, 1)).latent_dist.mode().float().flatten())
    return torch.cat(vals).std().item()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="folder for resumable fp32 state and the log")
    p.add_argument("--export", default=None, help="folder for the compact fp16 export (overwritten)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-batch", type=int, default=64, help="frames per VAE step (whole clips)")
    p.add_argument("--vae-lr", type=float, default=4e-4)
    p.add_argument("--unet-steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32, help="clips per UNet step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--save-every", type=float, default=150.0, help="seconds between checkpoints")
    p.add_argument("--max-minutes", type=float, default=1e9, help="stop (after saving) when this is spent")
    p.add_argument("--stop-at", type=int, default=None, help="stop (after saving) at this UNet step; the schedule "
                   "still runs to --unet-steps (to redo a run that a time limit stopped)")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--init", default=None, help="start from a compact export (fp16 weights, no optimizer state): "
                   "skips the VAE stage and continues the UNet step count and schedule")
    p.add_argument("--decoder-steps", type=int, default=0, help="fine-tune the VAE decoder alone (latents unchanged)")
    args = p.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: smoke tests only
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.work, exist_ok=True)
    start = time.time()
    cfg = ModelConfig()
    torch.manual_seed(args.seed)  # parameter init only; data has its own generator
    vae, unet, image_encoder = build_vae(cfg).to(device), build_unet(cfg).to(device), build_image_encoder(cfg).to(device)
    n_frozen = freeze_temporal_convolutions(unet)
    pictures = load_pictures()
    log(f"pictures: {len(pictures)} ({', '.join(pictures)}); params: vae {count_params(vae)/1e6:.2f}M "
        f"unet {count_params(unet)/1e6:.2f}M image_encoder {count_params(image_encoder)/1e6:.2f}M; "
        f"{n_frozen} temporal resnets frozen to identity; {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}", args.work)
    renderer = ClipRenderer(picture_bank(pictures, device), cfg.resolution, cfg.num_frames, seed=args.seed)

    # 1. VAE
    init_step = 0
    if args.init:
        from training.export import load_compact

        _, meta, v, u, e = load_compact(args.init)
        vae.load_state_dict(v.state_dict())
        unet.load_state_dict(u.state_dict())
        image_encoder.load_state_dict(e.state_dict())
        scaling, init_step = meta["scaling_factor"], meta["unet_step"]
        log(f"initialised from {args.init} (unet step {init_step}, scaling_factor {scaling:.4f})", args.work)
    else:
        train_vae(args, cfg, renderer, vae, args.work, device)
        renderer.generator.manual_seed(args.seed + 1)  # the same scaling factor whether resumed or not
        scaling = 1.0 / latent_std(vae, renderer, device)
        log(f"vae scaling_factor {scaling:.4f}", args.work)
    if args.decoder_steps:
        train_decoder(args, cfg, renderer, vae, args.work)
    vae.requires_grad_(False).eval()
    vae.register_to_config(scaling_factor=scaling)

    # 2. UNet + image encoder
    params = [p for p in list(unet.parameters()) + list(image_encoder.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    live = dict(list(unet.named_parameters(prefix="unet")) + list(image_encoder.named_parameters(prefix="enc")))
    ema = {k: v.detach().clone() for k, v in live.items()}  # exponential moving average: what we export
    path = os.path.join(args.work, "unet.pt")
    step = init_step
    if os.path.exists(path):
        state = torch.load(path, map_location=device)
        unet.load_state_dict(state["unet"])
        image_encoder.load_state_dict(state["image_encoder"])
        opt.load_state_dict(state["opt"])
        ema = state["ema"]
        step = state["step"]
        renderer.generator.set_state(state["data_rng"].cpu())
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())
        log(f"unet: resumed at step {step}", args.work)
        del state
    else:
        renderer.generator.manual_seed(args.seed + 2)
    model = torch.compile(unet) if args.compile else unet
    ema_keys = list(ema)

    def save(final=False):
        save_state(path, {"unet": unet.state_dict(), "image_encoder": image_encoder.state_dict(), "opt": opt.state_dict(),
                          "ema": ema, "step": step, "data_rng": renderer.generator.get_state(), "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else torch.get_rng_state()})
        if args.export:
            # export the EMA weights: load them into CPU copies of the modules
            u, e = build_unet(cfg), build_image_encoder(cfg)
            # strict=False: the EMA holds parameters; buffers (CLIP's position ids) keep their defaults
            u.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")}, strict=False)
            e.load_state_dict({k[4:]: v for k, v in ema.items() if k.startswith("enc.")}, strict=False)
            export_compact(args.export, cfg, vae, u, e, {"unet_step": step, "vae_steps": args.vae_steps, "seed": args.seed,
                                                         "scaling_factor": scaling, "final": final, "args": vars(args)})
        log(f"saved step {step} ({(time.time() - start) / 60:.1f} min since start)", args.work)

    B, Fr = args.batch, cfg.num_frames
    t0, last_save = time.time(), time.time()
    step0 = step
    stop = min(args.unet_steps, args.stop_at or args.unet_steps)
    while step < stop and (time.time() - start) / 60 < args.max_minutes:
        for g in opt.param_groups:  # a fresh optimizer (after --init) warms up again over 100 steps
            g["lr"] = lr_at(step, args.unet_steps, args.lr, args.warmup) * min(1.0, (step - step0 + 1) / 100 if args.init else 1.0)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            video, bucket = renderer(B)  # (B, F, 3, R, R) in [-1, 1], (B,)
            x0 = vae.encode(video.flatten(0, 1)).latent_dist.mode().float() * scaling
            x0 = x0.view(B, Fr, *x0.shape[1:])  # (B, F, 4, h, w)
            noise_aug = torch.exp(COND_AUG_MEAN + COND_AUG_STD * torch.randn(B, device=device))
            cond = video[:, 0] + noise_aug[:, None, None, None] * torch.randn_like(video[:, 0])
            cond_latent = vae.encode(cond).latent_dist.mode().float()  # NOT scaled, as in the pipeline
        keep = (torch.rand(B, device=device) >= CFG_DROPOUT).float()
        sigma = torch.exp(P_MEAN + P_STD * torch.randn(B, device=device))
        s = sigma[:, None, None, None, None]
        noisy = x0 + s * torch.randn_like(x0)
        c_in = 1 / torch.sqrt(s**2 + 1)
        cond_in = (cond_latent * keep[:, None, None, None])[:, None].expand(-1, Fr, -1, -1, -1)
        added_time_ids = torch.stack([torch.full_like(noise_aug, FPS_ID), bucket.float(), noise_aug], 1)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            emb = image_encoder(clip_input(video[:, 0])).image_embeds[:, None] * keep[:, None, None]  # (B, 1, D)
            out = model(torch.cat([c_in * noisy, cond_in], 2), 0.25 * torch.log(sigma), encoder_hidden_states=emb,
                        added_time_ids=added_time_ids).sample.float()
        x0_pred = out * (-s / torch.sqrt(s**2 + 1)) + noisy / (s**2 + 1)  # SVD's v-prediction
        loss = ((s**2 + 1) / s**2 * (x0_pred - x0).square()).mean()  # EDM weighting = unit-variance v loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_([ema[k] for k in ema_keys], [live[k].detach() for k in ema_keys], 1 - decay)
        if step % 100 == 0:
            log(f"unet step {step} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{(step - step0) / (time.time() - t0):.2f} it/s, {(time.time() - start) / 60:.1f} min", args.work)
        if time.time() - last_save > args.save_every:
            save()
            last_save = time.time()
    save(final=step >= args.unet_steps)


if __name__ == "__main__":
    main()
