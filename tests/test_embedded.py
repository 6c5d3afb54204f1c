"""Fast CPU tests of the shipped embedded I2V model (guard/models/embedded), loaded offline."""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import PIL.Image
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # training/ is not a package of guard: import it from the checkout
MODEL = os.path.join(ROOT, "guard", "models", "embedded")


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableVideoDiffusionPipeline

    p = StableVideoDiffusionPipeline.from_pretrained(MODEL)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def defaults():
    with open(os.path.join(MODEL, "guard_defaults.json")) as f:
        return json.load(f)


def _image(size: int) -> PIL.Image.Image:
    """A held-out photograph (never in the training data), center-cropped and resized."""
    import skimage.data

    img = skimage.data.coffee()
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return PIL.Image.fromarray(img).resize((size, size), PIL.Image.BICUBIC)


def test_folder_is_small_and_stock(pipe, defaults):
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(MODEL) for n in ns)
    assert size <= 30e6, f"embedded model is {size / 1e6:.1f} MB, over the 30 MB budget"
    assert pipe.unet.config.num_frames == defaults["num_frames"]
    assert pipe.unet.config.in_channels == 2 * pipe.vae.config.latent_channels
    assert pipe.unet.dtype == torch.float32 and pipe.image_encoder.dtype == torch.float32  # CPU math in fp32
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_generates_default_video_with_frame0_close_to_input(pipe, defaults):
    size = defaults["height"]
    image = _image(size)
    frames = pipe(
        image,
        height=defaults["height"],
        width=defaults["width"],
        num_inference_steps=defaults["num_inference_steps"],
        decode_chunk_size=defaults["num_frames"],
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    assert frames.shape == (defaults["num_frames"], defaults["height"], defaults["width"], 3)
    ref = np.asarray(image).astype(np.float64) / 255
    mse = np.mean((np.clip(frames[0], 0, 1) - ref) ** 2)
    psnr = 10 * np.log10(1 / mse)
    # The shipped model gives 18.0 dB on this image (model card); a 300-step checkpoint of the same
    # recipe gave 13.2 dB. The threshold leaves room for platform differences.
    assert psnr > 15.0, f"frame 0 PSNR {psnr:.1f} dB"
    # The video moves: later frames differ from frame 0 more than float noise would.
    assert np.abs(frames[-1] - frames[0]).mean() > 0.01


def test_temporal_resnets_are_identities_and_maps_are_exact(pipe, defaults):
    """The model card's design claims: temporal convolutions are off (zero last conv), so frames meet
    only in temporal attention; and the map-materialising processor computes the same UNet output."""
    from training.attention import TemporalAttnProcessor, set_temporal_processor

    unet = pipe.unet
    convs = [m.conv2 for n, m in unet.named_modules() if n.endswith("temporal_res_block")]
    assert len(convs) == 11 and all(float(c.weight.abs().max()) == 0 and float(c.bias.abs().max()) == 0 for c in convs)

    g = torch.Generator().manual_seed(0)
    h = defaults["height"] // 8
    sample = torch.randn(1, defaults["num_frames"], unet.config.in_channels, h, h, generator=g)
    emb = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    with torch.no_grad():
        ref = unet(sample, torch.tensor([0.5]), encoder_hidden_states=emb, added_time_ids=ids).sample
        saved = unet.attn_processors
        proc = TemporalAttnProcessor("store")
        set_temporal_processor(unet, proc)
        out = unet(sample, torch.tensor([0.5]), encoder_hidden_states=emb, added_time_ids=ids).sample
        unet.set_attn_processor(saved)
    assert len(proc.maps) == 10
    F_ = defaults["num_frames"]
    assert all(m.shape[-2:] == (F_, F_) and torch.allclose(m.sum(-1), torch.ones(())) for m in proc.maps)
    assert torch.allclose(out, ref, atol=1e-4), float((out - ref).abs().max())
