"""Growing a trained VAE (training/model.py grow_vae_state): wider and deeper, computing the same thing."""

import os
import sys

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.model import grow_vae_state  # noqa: E402


def _vae(channels, layers):
    torch.manual_seed(0)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=channels, layers_per_block=layers, latent_channels=4,
                                       down_block_types=("DownEncoderBlock2D",) * len(channels), sample_size=32)
    return vae.double().eval()


def _randomise(vae):
    """Random weights everywhere (a fresh VAE has zero-initialised parts that would hide a wrong growth)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return vae


@pytest.mark.parametrize("layers", [1, 2])
def test_a_grown_vae_computes_what_the_small_one_did(layers):
    small = _randomise(_vae((32, 32, 64), 1))
    big = _vae((32, 64, 128), layers)
    big.load_state_dict(grow_vae_state(big, small.state_dict(), torch.Generator().manual_seed(0)))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    z = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        a, b = small.encode(x).latent_dist, big.encode(x).latent_dist
        assert torch.allclose(a.mean, b.mean, atol=1e-9) and torch.allclose(a.logvar, b.logvar, atol=1e-9)
        # decoded as videos of 3 frames: the temporal layers see the same thing too
        assert torch.allclose(small.decode(z, num_frames=3).sample, big.decode(z, num_frames=3).sample, atol=1e-9)


def test_the_two_copies_of_a_channel_can_learn_apart():
    small = _randomise(_vae((32, 32, 64), 1))
    big = _vae((32, 64, 128), 1)
    grown = grow_vae_state(big, small.state_dict(), torch.Generator().manual_seed(0))
    w = grown["decoder.up_blocks.0.resnets.0.spatial_res_block.conv1.weight"]  # reads duplicated channels
    assert not torch.equal(w[:, 0::2], w[:, 1::2])  # split unevenly, so the copies get different gradients
    assert torch.allclose(w[:, 0::2] + w[:, 1::2], small.state_dict()["decoder.up_blocks.0.resnets.0.spatial_res_block.conv1.weight"].repeat_interleave(2, 0))


def test_only_a_smaller_vae_of_the_same_kind_grows():
    with pytest.raises(AssertionError, match="not 2x"):
        grow_vae_state(_vae((32, 96, 96), 1), _vae((32, 64, 64), 1).state_dict())


def test_latent_noise_is_new_every_frame_and_bounded_per_clip():
    """train.py --latent-noise: the decoder sees each frame's latent with its own noise, at one level
    per clip below the bound, and exactly the latent without the flag."""
    from training.train import VAEStep

    torch.manual_seed(0)
    clips, frames = 64, 4
    z = torch.randn(clips * frames, 4, 8, 8)
    assert torch.equal(VAEStep(None).jitter(z, frames), z)
    noise = (VAEStep(None, latent_noise=0.1).jitter(z, frames) - z).unflatten(0, (clips, frames))
    std = noise.std(dim=(2, 3, 4))  # (clips, frames)
    assert (std < 0.1 * 1.2).all() and std.max() > 0.08 and std.min() < 0.02  # levels spread over [0, 0.1)
    assert ((std.max(1).values - std.min(1).values) / std.mean(1) < 0.25).all()  # one level per clip
    assert (noise[:, 1:] - noise[:, :1]).abs().mean() > 0.5 * noise.abs().mean()  # drawn anew for every frame


def test_first_frame_weights_reach_frame_0_alone():
    """train.py --first-frame / --vae-first-frame: an error in frame 0 costs more with the weight, an
    error in any other frame costs the same."""
    from training.train import denoising_loss, first_frame_error

    B, F = 3, 5
    weight, bucket = torch.full((B, 1, 1, 1, 1), 2.0), torch.tensor([0, 60, 127])
    for frame in range(F):
        err = torch.zeros(B, F, 4, 8, 8)
        err[:, frame] = 0.5
        base = denoising_loss(err, weight, bucket)
        extra = denoising_loss(err, weight, bucket, first_frame=3.0) - base
        assert base > 0 and torch.isclose(extra, torch.tensor(3.0 * 2 * 0.25 if frame == 0 else 0.0))
        rec = torch.zeros(B * F, 3, 8, 8)
        x = err[:, :, :3].flatten(0, 1)
        assert torch.isclose(first_frame_error(rec - x, F), torch.tensor(0.5 + 0.25 if frame == 0 else 0.0))


def test_the_still_term_weighs_the_flicker_of_still_clips_alone():
    """train.py --still-td: on a still clip (bucket 0), an error that flips between frames costs more
    with the weight; its steady part costs the same, and so does any error on a moving clip."""
    from training.train import denoising_loss

    B, F = 3, 4
    weight, bucket = torch.full((B, 1, 1, 1, 1), 2.0), torch.tensor([0, 60, 127])
    flips = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None, None, None]  # frame to frame; 0 over the clip
    for clip in range(B):
        for flicker in (0.0, 0.5):
            err = torch.zeros(B, F, 4, 8, 8)
            err[clip] = 0.3 + flicker * flips  # a steady error of 0.3, and the flicker about it
            extra = denoising_loss(err, weight, bucket, still_td=3.0) - denoising_loss(err, weight, bucket)
            # the flicker's square, weighted, on one clip of B
            assert torch.isclose(extra, torch.tensor(3.0 * 2 * flicker**2 / B if clip == 0 else 0.0), atol=1e-6), (clip, flicker)
