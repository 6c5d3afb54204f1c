"""`python -m guard animate | protect | evaluate`: the command line mirrors what the app does."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import io
from .targets import DEFAULT_MODEL, MODELS

logger = logging.getLogger("guard")


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load(args):
    import torch

    from .targets import load_target

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    return load_target(args.model, device=pick_device(args.device), dtype=dtype)


def cmd_animate(args) -> int:
    image, notices = io.load_image(args.image)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    target = load(args)
    start = time.perf_counter()
    video = target.generate(image, seed=args.seed, num_frames=args.frames, num_inference_steps=args.steps)
    io.save_video(video.frames, args.output, fps=args.fps)
    print(f"{args.output}: {len(video.frames)} frames {video.frames.shape[2]}x{video.frames.shape[1]} "
          f"from {args.model}, seed {args.seed}, {time.perf_counter() - start:.1f} s")
    return 0


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"one of {', '.join(MODELS)}, a hub id or a local diffusers folder (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--seed", type=int, default=0, help="seed of the video generation (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m guard", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("animate", help="make a video from an image")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, help="mp4 file to write")
    add_model_options(p)
    p.add_argument("--frames", type=int, default=None, help="frames to generate (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--fps", type=int, default=7, help="frame rate of the written mp4")
    p.set_defaults(func=cmd_animate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (io.InputError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
