"""Train the embedded I2V model (a small SVD) on procedural clips, on one GPU or several.

    python training/train.py --work W --export E --vae-steps 2000 --unet-steps 12000 --max-minutes 9
    accelerate launch --num_processes N training/train.py ...   # data parallel, same effective batch

Two stages, both resumable from `--work` (full fp32 state and optimizer, written every
`--save-every` seconds and at the end), so a run can be cut into chunks of a few minutes:
1. VAE (AutoencoderKLTemporalDecoder): L1 + MSE + image-gradient L1 on clip frames, tiny KL, and a
   static-video term: the latent of frame 0 repeated over the frames must decode to frame 0 in every
   frame (a still video decodes still). Then scaling_factor = 1 / std of the latents, as SD/SVD did.
2. UNet + image encoder together, SVD's recipe: EDM lognormal noise levels, v-prediction with SVD's
   preconditioning, first-frame conditioning (CLIP embedding by cross-attention + VAE latent of the
   noise-augmented first frame concatenated on channels), added_time_ids = [fps - 1,
   motion_bucket_id, noise_aug_strength], conditioning dropout for classifier-free guidance. Every
   layer trains, the temporal convolutions included, as in SVD. Clip length varies per step.

With N processes each renders and trains on batch / N clips (its own data generator, seeded from
--seed and its rank), so the effective batch, the learning rate and the schedule do not change.
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
from accelerate import Accelerator
from accelerate.utils import broadcast
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.data import ClipRenderer, picture_bank, read_pictures, sharp_views  # noqa: E402
from training.model import ModelConfig, build_image_encoder, build_unet, build_vae, count_params, grow_vae_state  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as SVD's feature_extractor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FPS_ID = 6  # the pipeline passes fps - 1 and defaults to fps=7; motion here is per frame, not per second
P_MEAN, P_STD = 0.7, 1.6  # SVD's lognormal noise-level distribution (log sigma ~ N(0.7, 1.6^2))
COND_AUG_MEAN, COND_AUG_STD = -3.0, 0.5  # SVD's conditioning noise: log(noise_aug) ~ N(-3, 0.5^2)
CFG_DROPOUT = 0.1  # drop image embedding and image latent together: the pipeline's uncond zeros both


class Log:
    def __init__(self, work: str, accelerator: Accelerator):
        self.path, self.main = os.path.join(work, "log.txt"), accelerator.is_main_process

    def __call__(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)
            with open(self.path, "a") as f:
                f.write(msg + "\n")


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


def image_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dy = lambda y: y[..., 1:, :] - y[..., :-1, :]  # noqa: E731
    dx = lambda y: y[..., :, 1:] - y[..., :, :-1]  # noqa: E731
    return (dy(a) - dy(b)).abs().mean() + (dx(a) - dx(b)).abs().mean()


def first_frame_error(diff: torch.Tensor, num_frames: int) -> torch.Tensor:
    """L1 + MSE of each clip's frame 0 alone; diff = reconstruction - clip, (clips * num_frames, 3, H, W)."""
    d = diff.unflatten(0, (-1, num_frames))[:, 0]
    return d.abs().mean() + d.square().mean()


def denoising_loss(err: torch.Tensor, weight: torch.Tensor, bucket: torch.Tensor, still_td: float = 0.0,
                   first_frame: float = 0.0) -> torch.Tensor:
    """The UNet's loss on err = x0_pred - x0 (B, F, C, h, w): the EDM-weighted squared error, plus
    `still_td` times that of the frame-to-frame part of the error on still clips (bucket 0: what
    changes across their frames is flicker), plus `first_frame` times that of frame 0 alone (the frame
    that must be the input)."""
    loss = (weight * err.square()).mean()
    if still_td:
        still = (bucket == 0).float()[:, None, None, None, None]
        loss = loss + still_td * (weight * still * (err - err.mean(1, keepdim=True)).square()).mean()
    if first_frame:
        loss = loss + first_frame * (weight * err[:, :1].square()).mean()
    return loss


def main_process_says(acc: Accelerator, *flags: bool) -> list[bool]:
    """The main process's flags, on every process. What a process reads from its own clock (the
    deadline, a save that is due) must be one decision: a process that stops or saves alone enters the
    save's gather while another is in a step's all-reduce, and both wait there for ever. One
    process: its own flags, without a device round trip."""
    if acc.num_processes == 1:
        return list(flags)
    return [bool(f) for f in broadcast(torch.tensor(flags, dtype=torch.uint8, device=acc.device)).tolist()]


def save_state(path: str, state: dict) -> None:
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_state(path: str, device: torch.device) -> dict:
    """A state written by save_state, on `device`. Each of several CPU processes has the device
    "cpu:0", a location torch.load cannot restore to: "cpu" is the same memory."""
    return torch.load(path, map_location="cpu" if device.type == "cpu" else device)


def export_compact(export_dir: str, cfg: ModelConfig, vae, unet, image_encoder, meta: dict) -> None:
    """fp16 safetensors, each file < 16 MiB, written to a temp folder and swapped in."""
    tmp = export_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    half = lambda m: {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in m.state_dict().items()}  # noqa: E731

    def save_shards(name: str, sd: dict) -> int:  # files below 15 MB
        shards, current, size = [], {}, 0
        for k in sorted(sd):
            nbytes = sd[k].numel() * 2
            if current and size + nbytes > 15_000_000:
                shards.append(current)
                current, size = {}, 0
            current[k] = sd[k]
            size += nbytes
        shards.append(current)
        for i, shard in enumerate(shards):
            save_file(shard, os.path.join(tmp, f"{name}-{i}.safetensors"))
        return len(shards)

    save_file(half(image_encoder), os.path.join(tmp, "image_encoder.safetensors"))
    shards = {"unet_shards": save_shards("unet", half(unet)), "vae_shards": save_shards("vae", half(vae))}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump({"model_config": cfg.to_dict(), **shards, **meta}, f, indent=1)
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(tmp, export_dir)


def load_vae_state(vae, state: dict, log=None) -> None:
    """Load a VAE state; a narrower one (an older, smaller VAE) is grown to this VAE's shapes first,
    computing what it computed (model.grow_vae_state): the encoder's latents stay the UNet's."""
    own = vae.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in state):
        state = grow_vae_state(vae, {k: v.cpu() for k, v in state.items()}, torch.Generator().manual_seed(0))
        if log:
            log("vae: grown from a smaller VAE (same function; the added width and resnets train from here)")
    vae.load_state_dict(state)


class VAEStep(torch.nn.Module):
    """One VAE training forward in a module (so that data-parallel wrappers see it as `forward`):
    reconstruction of the clip, and the decoding of frame 0's latent repeated over the frames; with an
    anchor (a frozen VAE), the mean squared distance of the latents from the anchor's."""

    def __init__(self, vae, decoder_only: bool = False, anchor=None, latent_noise: float = 0.0):
        super().__init__()
        self.vae, self.decoder_only, self.anchor, self.latent_noise = vae, decoder_only, anchor, latent_noise

    def jitter(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """z plus Gaussian noise drawn anew for every frame, its std uniform in [0, latent_noise) per clip."""
        if not self.latent_noise:
            return z
        level = self.latent_noise * torch.rand(z.shape[0] // num_frames, 1, 1, 1, device=z.device)
        return z + level.repeat_interleave(num_frames, 0) * torch.randn_like(z)

    def forward(self, x: torch.Tensor, num_frames: int, still_clips: int = 2):
        with torch.set_grad_enabled(not self.decoder_only):
            posterior = self.vae.encode(x).latent_dist  # x: (B*F, 3, H, W)
        z = posterior.sample()
        rec = self.vae.decode(self.jitter(z, num_frames), num_frames=num_frames).sample
        z0 = z.unflatten(0, (-1, num_frames))[:still_clips, :1].expand(-1, num_frames, -1, -1, -1).flatten(0, 1)
        still = self.vae.decode(self.jitter(z0, num_frames), num_frames=num_frames).sample.unflatten(0, (-1, num_frames))
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        drift = torch.zeros((), device=x.device)
        if self.anchor is not None:
            with torch.no_grad():
                ref = self.anchor.encode(x).latent_dist.mean
            drift = (posterior.mean.float() - ref.float()).square().mean()
        return rec, still, kl, drift


def train_vae(args, cfg, renderer, vae, acc: Accelerator, log: Log, deadline: float) -> bool:
    """Stage 1. Returns True when the stage is complete (False: stopped at the deadline, saved)."""
    path = os.path.join(args.work, "vae.pt")
    if args.vae_decoder_only:  # the latent space (and so a trained UNet) stays as it is
        vae.requires_grad_(False)
        vae.decoder.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.vae_lr, weight_decay=0.0)
    # diffusers runs the decoder's mid-block attention only between two of its resnets: with one it never
    # runs, and data-parallel training would wait for its gradients. It stays in the optimizer (no
    # gradient, no update, as on one process), so that a saved optimizer state still loads.
    if len(vae.decoder.mid_block.resnets) == 1:
        vae.decoder.mid_block.attentions.requires_grad_(False)
    step, base, init_scaling = 0, 0, None
    if os.path.exists(path):
        state = load_state(path, acc.device)
        load_vae_state(vae, state["vae"], log)
        step, base = state["step"], state.get("base_steps", 0)
        init_scaling = state.get("init_scaling")
        if state["opt"] is not None:  # None: taken from an export (--init), already trained
            opt.load_state_dict(state["opt"])
            renderer.generator.set_state(state["data_rng"][acc.process_index].cpu())
        log(f"vae: resumed at step {step}")
        if step >= args.vae_steps:  # complete
            return True
    anchor = None
    if args.vae_anchor:  # the encoder trains, near the latents of the VAE it started from (the UNet's)
        ref_path = os.path.join(args.work, "vae_anchor.pt")
        if not os.path.exists(ref_path) and acc.is_main_process:
            save_state(ref_path, state["vae"])  # as loaded at step 0: the --init's VAE
        acc.wait_for_everyone()
        anchor = build_vae(cfg).to(acc.device)
        load_vae_state(anchor, load_state(ref_path, acc.device))
        anchor.requires_grad_(False).eval()
    noise = args.latent_noise / (init_scaling or 1.0)  # in the encoder's own units
    model, opt = acc.prepare(VAEStep(vae, args.vae_decoder_only, anchor, noise), opt)
    clips = max(1, args.vae_batch // cfg.num_frames // acc.num_processes)
    renderer.photo_share = args.vae_photo_share

    def save():
        rngs = acc.gather(renderer.generator.get_state().to(acc.device)[None]).cpu()
        if acc.is_main_process:
            save_state(path, {"vae": acc.unwrap_model(model).vae.state_dict(), "opt": opt.state_dict(), "step": step, "data_rng": rngs,
                              "base_steps": base, "total_steps": base + step, "init_scaling": init_scaling})

    t0, last_save, step0, mses = time.time(), time.time(), step, []
    while step < args.vae_steps:
        late, due = main_process_says(acc, time.time() > deadline, time.time() - last_save > args.save_every)
        if late:
            save()
            return False
        if due:  # the save due after the previous step (the same state): one look at the clock per step
            save()
            last_save = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 200)
        x, _ = renderer(clips, cfg.num_frames)
        F_ = x.shape[1]
        x = x.flatten(0, 1)  # (B*F, 3, H, W) in [-1, 1]
        with acc.autocast():
            rec, still, kl, drift = model(x, F_)
        rec, still = rec.float(), still.float()
        frame0 = x.unflatten(0, (clips, F_))[: still.shape[0], :1]  # a still video decodes still, as frame 0
        diff = rec - x
        l1 = diff.abs().mean()
        mse = diff.square().mean()
        static = (still - frame0).abs().mean() + (still[:, 1:] - still[:, :1]).abs().mean()
        worst = (still[:, 1:] - still[:, :1]).abs().mean((0, 2, 3, 4)).max()  # the frame that strays most (the edges)
        loss = (l1 + mse + 0.5 * image_gradient_l1(rec, x) + args.still_weight * static + args.still_worst * worst
                + args.kl * kl + args.vae_anchor * drift * (init_scaling or 1.0) ** 2)
        if args.vae_first_frame:  # frame 0 is the one compared with the input photo
            loss = loss + args.vae_first_frame * first_frame_error(diff, F_)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        mses.append(mse.detach())  # read at the log, not every step (a GPU sync)
        if step % 100 == 0:  # psnr: of the last 100 batches' mean squared error (one batch's is noisy)
            log(f"vae step {step} loss {loss.item():.4f} psnr {10 * math.log10(4.0 / torch.stack(mses).mean().item()):.2f} static {static.item():.4f} "
                f"kl {kl.item():.3f} drift {drift.item() * (init_scaling or 1.0) ** 2:.4f} {(step - step0) / (time.time() - t0):.1f} it/s")
            mses = []
    save()
    return True


@torch.no_grad()
def latent_std(vae, renderer, cfg, acc, n=8):
    vals = []
    for _ in range(n):
        video, _ = renderer(8, cfg.num_frames)
        with acc.autocast():
            vals.append(vae.encode(video.flatten(0, 1)).latent_dist.mode().float().flatten())
    return acc.gather(torch.cat(vals)).std().item()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="folder for resumable fp32 state and the log")
    p.add_argument("--export", default=None, help="folder for the compact fp16 export (overwritten)")
    p.add_argument("--pictures", default=None, help=".npz of training pictures (training/data.py save_pictures); "
                   "default: read them from the installed packages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-batch", type=int, default=64, help="frames per VAE step (whole clips), all processes")
    p.add_argument("--vae-lr", type=float, default=4e-4)
    p.add_argument("--still-weight", type=float, default=1.0, help="weight of the VAE's still-video term")
    p.add_argument("--retrain-vae", action="store_true", help="with --init: train its VAE on for --vae-steps more "
                   "steps (fresh optimizer) instead of taking it as trained; the UNet then adapts to it")
    p.add_argument("--vae-decoder-only", action="store_true", help="train only the VAE's (temporal) decoder: the "
                   "latents, and so a trained UNet, stay valid")
    p.add_argument("--latent-noise", type=float, default=0.0, help="the decoder learns to decode latents with "
                   "per-frame Gaussian noise (std up to this, in the UNet's scaled units; a VAE trained from scratch: "
                   "its own) as the clean clip: a generated video's latents are never exact, and a decoder that turns "
                   "their errors into motion makes flicker")
    p.add_argument("--vae-first-frame", type=float, default=0.0, help="extra weight on the reconstruction of each "
                   "clip's frame 0 (L1 + MSE): the decoder's frame 0 takes in its moving neighbours")
    p.add_argument("--still-worst", type=float, default=0.0, help="weight of the still video's worst frame (its mean "
                   "difference from the still video's frame 0): the temporal decoder's edge frames stray most")
    p.add_argument("--vae-channels", default=None, help="VAE widths per level, e.g. 32,64,256,256 (default: the "
                   "ModelConfig's); a narrower VAE from --init is grown to them (model.grow_vae_state)")
    p.add_argument("--vae-layers", type=int, default=None, help="resnets per VAE level (default: the ModelConfig's)")
    p.add_argument("--vae-anchor", type=float, default=0.0, help="with --retrain-vae: weight of the squared distance "
                   "of the encoder's latents (scaled) from those of the --init's VAE, so that the UNet's latent space "
                   "moves little while the encoder learns to keep more of the picture")
    p.add_argument("--vae-photo-share", type=float, default=None, help="share of the VAE's clips drawn from the photos "
                   "(default: every tile of the bank alike, most of them procedural textures)")
    p.add_argument("--sharp-share", type=float, default=0.0, help="share of clips (both stages) drawn from sharp views "
                   "of the photos, resized once as guard prepares a photo, instead of the bank's twice-resampled crops")
    p.add_argument("--kl", type=float, default=1e-5, help="weight of the VAE's KL term (per latent element)")
    p.add_argument("--unet-steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=32, help="clips per UNet step, all processes")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--still-clips", type=float, default=0.1, help="share of UNet clips drawn still (bucket 0)")
    p.add_argument("--still-td", type=float, default=0.0, help="extra weight on the frame-to-frame part of the error "
                   "on still clips (bucket 0): the flicker a still video must not have")
    p.add_argument("--first-frame", type=float, default=0.0, help="extra weight on frame 0's denoising error (UNet): "
                   "the frame the pipeline should return as the input photo")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--max-minutes", type=float, default=1e9, help="stop (after saving and exporting) when this is spent")
    p.add_argument("--init", default=None, help="a compact export or a shipped diffusers folder to continue from when "
                   "--work holds no state (a fresh machine): its VAE is taken as trained, its (EMA) weights as the UNet's "
                   "and image encoder's, with a fresh optimizer")
    p.add_argument("--textures-every", type=int, default=500, help="steps between fresh procedural textures")
    args = p.parse_args()
    if args.retrain_vae and not args.init:
        p.error("--retrain-vae trains the VAE of --init on: name the export or folder with --init")
    for name, what in (("latent_noise", "a standard deviation"), ("first_frame", "a loss weight"),
                       ("vae_first_frame", "a loss weight")):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} is {what}: it cannot be negative, got {getattr(args, name)}")
    for name in ("latent_noise", "vae_first_frame", "still_worst"):  # VAE-stage terms: a trained --init skips that stage
        if getattr(args, name) and args.init and not args.retrain_vae:
            flag = "--" + name.replace("_", "-")
            p.error(f"{flag} trains the VAE's decoder, but --init's VAE is taken as trained: add --retrain-vae")
    if args.vae_anchor and not args.retrain_vae:
        p.error("--vae-anchor keeps a retrained VAE near the VAE of --init: use it with --init and --retrain-vae")

    acc = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.work, exist_ok=True)
    log = Log(args.work, acc)
    start = time.time()
    deadline = start + 60 * args.max_minutes - 30  # leave time to save and export
    cfg = ModelConfig()
    if args.vae_channels:
        cfg.vae_channels = tuple(int(c) for c in args.vae_channels.split(","))
    if args.vae_layers:
        cfg.vae_layers = args.vae_layers
    torch.manual_seed(args.seed)  # parameter init only (the same on every process); data has its own generators
    vae, unet, image_encoder = build_vae(cfg), build_unet(cfg), build_image_encoder(cfg)
    pictures = read_pictures(args.pictures)
    log(f"pictures: {len(pictures)} ({', '.join(pictures)}); params: vae {count_params(vae) / 1e6:.2f}M "
        f"unet {count_params(unet) / 1e6:.2f}M image_encoder {count_params(image_encoder) / 1e6:.2f}M; "
        f"{acc.num_processes} process(es) on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    size = (cfg.height, cfg.width)
    renderer = ClipRenderer(picture_bank(pictures, size, acc.device), size, seed=args.seed * 1000 + acc.process_index,
                            views=sharp_views(pictures, size, seed=args.seed) if args.sharp_share else None, sharp_share=args.sharp_share)

    # Every process reads the init: its weights, and its step, which sets the learning rate and the
    # loop's length. unet.pt is written only after the barrier below: every process sees the same answer.
    if args.init and not os.path.exists(os.path.join(args.work, "unet.pt")):
        if os.path.exists(os.path.join(args.init, "model_index.json")):  # a shipped diffusers folder
            from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
            from transformers import CLIPVisionModelWithProjection

            v = AutoencoderKLTemporalDecoder.from_pretrained(args.init, subfolder="vae", torch_dtype=torch.float32)
            u = UNetSpatioTemporalConditionModel.from_pretrained(args.init, subfolder="unet", torch_dtype=torch.float32)
            e = CLIPVisionModelWithProjection.from_pretrained(args.init, subfolder="image_encoder", dtype=torch.float32)
            with open(os.path.join(args.init, "training_meta.json")) as f:
                meta = json.load(f)
        else:  # a compact export
            from training.export import load_compact

            _, meta, v, u, e = load_compact(args.init)
        if acc.is_main_process and not os.path.exists(os.path.join(args.work, "vae.pt")):  # else a VAE stage is under way
            trained = meta.get("vae_steps", meta.get("last_run_args", {}).get("vae_steps", 0))  # steps behind the init's VAE
            save_state(os.path.join(args.work, "vae.pt"), {"vae": v.state_dict(), "step": 0 if args.retrain_vae else args.vae_steps,
                                                           "opt": None, "data_rng": None, "base_steps": trained,
                                                           "init_scaling": meta.get("scaling_factor"),
                                                           "total_steps": trained + (args.vae_steps if args.retrain_vae else 0)})
        unet.load_state_dict(u.state_dict())
        image_encoder.load_state_dict(e.state_dict())
        args.resume_step = meta["unet_step"]
        log(f"initialised from {args.init} (unet step {meta['unet_step']}; fresh optimizer)")
    acc.wait_for_everyone()

    # 1. VAE
    vae.to(acc.device)
    if not train_vae(args, cfg, renderer, vae, acc, log, deadline):
        log(f"stopped in the VAE stage ({(time.time() - start) / 60:.1f} min)")
        if args.init and args.export and acc.is_main_process:  # the UNet is the init's: export the VAE with it now
            state = torch.load(os.path.join(args.work, "vae.pt"), map_location="cpu")
            load_vae_state(vae, state["vae"])
            vae.register_to_config(scaling_factor=state["init_scaling"])
            export_compact(args.export, cfg, vae, unet, image_encoder,
                           {"unet_step": getattr(args, "resume_step", 0), "vae_steps": state["total_steps"], "seed": args.seed,
                            "scaling_factor": state["init_scaling"], "final": False, "args": vars(args)})
            log(f"exported the VAE at vae step {state['total_steps']}")
        return
    vae_state = load_state(os.path.join(args.work, "vae.pt"), acc.device)
    vae_steps = vae_state.get("total_steps", args.vae_steps)
    vae = build_vae(cfg).to(acc.device)
    load_vae_state(vae, vae_state["vae"])
    vae.requires_grad_(False).eval()
    if vae_state.get("init_scaling") and (args.vae_decoder_only or args.vae_anchor or not args.retrain_vae):
        scaling = vae_state["init_scaling"]  # the init's encoder: the UNet's latents keep their scale
        log(f"vae scaling_factor kept at {scaling:.4f} (the encoder of --init)")
    else:
        renderer.generator.manual_seed(args.seed * 1000 + 999)  # the same scaling factor whether resumed or not
        scaling = 1.0 / latent_std(vae, renderer, cfg, acc)
        log(f"vae scaling_factor {scaling:.4f}")
    vae.register_to_config(scaling_factor=scaling)
    del vae_state

    # 2. UNet + image encoder
    unet.to(acc.device)
    image_encoder.to(acc.device)
    params = list(unet.parameters()) + list(image_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    live = dict(list(unet.named_parameters(prefix="unet")) + list(image_encoder.named_parameters(prefix="enc")))
    ema = {k: v.detach().clone() for k, v in live.items()}  # exponential moving average: what we export
    path = os.path.join(args.work, "unet.pt")
    step = 0
    renderer.generator.manual_seed(args.seed * 1000 + 500 + acc.process_index)
    renderer.still = args.still_clips
    renderer.photo_share = None
    frames_rng = torch.Generator().manual_seed(args.seed + 7)  # clip length per step, the same on every process
    if os.path.exists(path):
        state = load_state(path, acc.device)
        unet.load_state_dict(state["unet"])
        image_encoder.load_state_dict(state["image_encoder"])
        opt.load_state_dict(state["opt"])
        ema, step = state["ema"], state["step"]
        renderer.generator.set_state(state["data_rng"][acc.process_index].cpu())
        frames_rng.set_state(state["frames_rng"].cpu())
        log(f"unet: resumed at step {step}")
        del state
    unet_m, enc_m, opt = acc.prepare(unet, image_encoder, opt)
    ema_keys = list(ema)
    step = getattr(args, "resume_step", step)

    def save(final=False):
        rngs = acc.gather(renderer.generator.get_state().to(acc.device)[None]).cpu()
        if not acc.is_main_process:
            return
        save_state(path, {"unet": acc.unwrap_model(unet_m).state_dict(), "image_encoder": acc.unwrap_model(enc_m).state_dict(),
                          "opt": opt.state_dict(), "ema": ema, "step": step, "data_rng": rngs, "frames_rng": frames_rng.get_state()})
        if args.export:
            u, e = build_unet(cfg), build_image_encoder(cfg)
            # strict=False: the EMA holds parameters; buffers (CLIP's position ids) keep their defaults
            u.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")}, strict=False)
            e.load_state_dict({k[4:]: v for k, v in ema.items() if k.startswith("enc.")}, strict=False)
            export_compact(args.export, cfg, vae, u, e, {"unet_step": step, "vae_steps": vae_steps, "seed": args.seed,
                                                         "scaling_factor": scaling, "final": final, "args": vars(args)})
        log(f"saved step {step} ({(time.time() - start) / 60:.1f} min since start)")

    B = max(1, args.batch // acc.num_processes)
    t0, last_save, step0 = time.time(), time.time(), step
    while step < args.unet_steps:
        late, due = main_process_says(acc, time.time() >= deadline, time.time() - last_save > args.save_every)
        if late:
            break
        if due:  # the save due after the previous step (the same state): one look at the clock per step
            save()
            last_save = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.unet_steps, args.lr, args.warmup)
        if step % args.textures_every == 0:
            renderer.refresh_textures()
        Fr = cfg.train_frames[int(torch.randint(len(cfg.train_frames), (1,), generator=frames_rng))]
        Bf = max(1, B * cfg.num_frames // Fr)  # about the same number of frames per step
        dev = acc.device
        with torch.no_grad(), acc.autocast():
            video, bucket = renderer(Bf, Fr)  # (B, F, 3, H, W) in [-1, 1], (B,)
            x0 = vae.encode(video.flatten(0, 1)).latent_dist.mode().float() * scaling
            x0 = x0.view(Bf, Fr, *x0.shape[1:])  # (B, F, C, h, w)
            noise_aug = torch.exp(COND_AUG_MEAN + COND_AUG_STD * torch.randn(Bf, device=dev))
            cond = video[:, 0] + noise_aug[:, None, None, None] * torch.randn_like(video[:, 0])
            cond_latent = vae.encode(cond).latent_dist.mode().float()  # NOT scaled, as in the pipeline
        keep = (torch.rand(Bf, device=dev) >= CFG_DROPOUT).float()
        sigma = torch.exp(P_MEAN + P_STD * torch.randn(Bf, device=dev))
        s = sigma[:, None, None, None, None]
        noisy = x0 + s * torch.randn_like(x0)
        c_in = 1 / torch.sqrt(s**2 + 1)
        cond_in = (cond_latent * keep[:, None, None, None])[:, None].expand(-1, Fr, -1, -1, -1)
        added_time_ids = torch.stack([torch.full_like(noise_aug, FPS_ID), bucket.float(), noise_aug], 1)
        with acc.autocast():
            emb = enc_m(clip_input(video[:, 0])).image_embeds[:, None] * keep[:, None, None]  # (B, 1, D)
            out = unet_m(torch.cat([c_in * noisy, cond_in], 2), 0.25 * torch.log(sigma), encoder_hidden_states=emb,
                         added_time_ids=added_time_ids).sample.float()
        x0_pred = out * (-s / torch.sqrt(s**2 + 1)) + noisy / (s**2 + 1)  # SVD's v-prediction
        weight = (s**2 + 1) / s**2  # EDM weighting = unit-variance v loss
        loss = denoising_loss(x0_pred - x0, weight, bucket, args.still_td, args.first_frame)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_([ema[k] for k in ema_keys], [live[k].detach() for k in ema_keys], 1 - decay)
        if step % 100 == 0:
            log(f"unet step {step} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{(step - step0) / (time.time() - t0):.2f} it/s, {(time.time() - start) / 60:.1f} min")
    save(final=step >= args.unet_steps)


if __name__ == "__main__":
    main()
