"""Turn train.py's compact fp16 export into the diffusers folder that guard ships.

    python training/export.py EXPORT_DIR guard/models/embedded

The result loads offline with `StableVideoDiffusionPipeline.from_pretrained(folder)`. Weights are
stored in fp16 (the size limit); configs ask for float32 so that a plain `from_pretrained` on a CPU
computes in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from diffusers import StableVideoDiffusionPipeline
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.model import (  # noqa: E402
    DEFAULT_STEPS,
    GUIDANCE,
    ModelConfig,
    build_feature_extractor,
    build_image_encoder,
    build_scheduler,
    build_unet,
    build_vae,
)


def load_compact(export_dir: str):
    """Components (float32, eval) and the metadata from a compact export."""
    with open(os.path.join(export_dir, "meta.json")) as f:
        meta = json.load(f)
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model_config"].items()})
    vae, unet, image_encoder = build_vae(cfg), build_unet(cfg), build_image_encoder(cfg)

    def weights(name: str) -> dict:  # float32, from NAME-i.safetensors shards, or one NAME.safetensors (older exports)
        files = [f"{name}-{i}.safetensors" for i in range(meta[f"{name}_shards"])] if f"{name}_shards" in meta else [f"{name}.safetensors"]
        sd = {}
        for file in files:
            sd.update(load_file(os.path.join(export_dir, file)))
        return {k: v.float() for k, v in sd.items()}

    vae.load_state_dict(weights("vae"))
    vae.register_to_config(scaling_factor=meta["scaling_factor"])
    image_encoder.load_state_dict(weights("image_encoder"), strict=False)
    unet.load_state_dict(weights("unet"))
    return cfg, meta, vae.eval(), unet.eval(), image_encoder.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir")
    p.add_argument("out_dir")
    args = p.parse_args()
    cfg, meta, vae, unet, image_encoder = load_compact(args.export_dir)
    pipe = StableVideoDiffusionPipeline(
        vae=vae.half(),
        image_encoder=image_encoder.half(),
        unet=unet.half(),
        scheduler=build_scheduler(),
        feature_extractor=build_feature_extractor(),
    )
    pipe.save_pretrained(args.out_dir, safe_serialization=True)
    # transformers reads the dtype to build the model in from config.json: keep CPU math in float32
    path = os.path.join(args.out_dir, "image_encoder", "config.json")
    with open(path) as f:
        config = json.load(f)
    config["dtype"] = "float32"
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    # Name the processor class that works everywhere: without torchvision, transformers saves its PIL
    # fallback's name, which a machine with torchvision need not know; loading falls back by itself.
    path = os.path.join(args.out_dir, "model_index.json")
    with open(path) as f:
        index = json.load(f)
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    with open(path, "w") as f:
        json.dump(index, f, indent=2)
    # What the pipeline's own defaults (576x1024, 25 steps) cannot say: how this model is meant to run.
    with open(os.path.join(args.out_dir, "guard_defaults.json"), "w") as f:
        json.dump({"height": cfg.height, "width": cfg.width, "num_frames": cfg.num_frames,
                   "num_inference_steps": DEFAULT_STEPS, "min_guidance_scale": GUIDANCE, "max_guidance_scale": GUIDANCE},
                  f, indent=1)
    with open(os.path.join(args.out_dir, "training_meta.json"), "w") as f:
        # the last run's arguments; a run started with --init continues the one named there (model card)
        json.dump({k: meta[k] for k in ("unet_step", "vae_steps", "scaling_factor") if k in meta} | {"last_run_args": meta["args"]}, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(args.out_dir) for n in ns)
    print(f"wrote {args.out_dir}: {size / 1e6:.1f} MB, unet step {meta['unet_step']}")


if __name__ == "__main__":
    main()
