"""Frames of the original's video and of guarded videos, one row each, from a `guard evaluate` report.

    python scripts/frames_side_by_side.py REPORT_DIR OUT.png [--image coffee] [--methods freeze,noise] [--eps 8]

Reads REPORT_DIR/videos/{image}_original.mp4 and {image}_{method}_eps{eps}_guarded.mp4 (the first
video seed's, which the report keeps) and writes one PNG: a row per video, its frames left to right,
each row labelled. What you see is what the report's numbers measured.
"""

from __future__ import annotations

import argparse
import os

import imageio.v2 as imageio
import numpy as np
import PIL.Image
import PIL.ImageDraw


def row(path: str, label: str, every: int) -> np.ndarray:
    frames = imageio.mimread(path)[::every]
    strip = np.concatenate([np.asarray(f)[..., :3] for f in frames], axis=1)
    canvas = PIL.Image.new("RGB", (strip.shape[1], strip.shape[0] + 18), "white")
    canvas.paste(PIL.Image.fromarray(strip), (0, 18))
    PIL.ImageDraw.Draw(canvas).text((4, 3), label, fill="black")
    return np.asarray(canvas)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report")
    p.add_argument("out")
    p.add_argument("--images", default="coffee", help="comma-separated image names of the report")
    p.add_argument("--methods", default="freeze,noise")
    p.add_argument("--eps", type=int, default=8)
    p.add_argument("--every", type=int, default=1, help="keep every n-th frame")
    args = p.parse_args()
    rows = []
    for image in args.images.split(","):
        videos = os.path.join(args.report, "videos")
        rows.append(row(os.path.join(videos, f"{image}_original.mp4"), f"{image}: original", args.every))
        for method in args.methods.split(","):
            path = os.path.join(videos, f"{image}_{method}_eps{args.eps}_guarded.mp4")
            rows.append(row(path, f"{image}: guarded, {method} {args.eps}/255", args.every))
    PIL.Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}: {len(rows)} rows")


if __name__ == "__main__":
    main()
