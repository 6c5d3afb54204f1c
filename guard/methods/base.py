"""What every protection method shares: the `Method` interface and the quantities several use."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import PIL.Image
import torch

from ..targets.base import Target


@dataclass
class Method:
    """A protection = its losses. The PGD loop (`guard.optimize.protect`) minimises `loss()["loss"]`.

    setup() computes what stays fixed during the attack (clean references, targets) without
    gradients; loss() is called once per PGD step with the current guarded image (B, 3, H, W) in
    [0, 1] and returns named scalar terms, "loss" being the one minimised.

    Every randomness comes from `generator`, the protection's own (seeded with `PGDConfig.seed`).
    In robust mode loss() also gets that step's `transform` (`guard.optimize.Transform`): the method
    applies it to the guarded image and to every reference computed from the clean image, so that a
    transformed guarded image is never compared with an untransformed reference. What a loss pulls
    toward (the gray image, the target video) is what the model should see whatever happened to the
    photo: kept."""

    name = ""
    uses_gradient = True

    def settings(self) -> dict:
        return {"method": self.name, **asdict(self)}

    def setup(self, target: Target, x: torch.Tensor, generator: torch.Generator) -> None:
        pass

    def loss(self, target: Target, x_adv: torch.Tensor, generator: torch.Generator,
             transform=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def teardown(self) -> None:
        """Drop references to tensors kept by setup (they can be GBs on a real model)."""
        for key, value in list(vars(self).items()):
            if isinstance(value, (torch.Tensor, list, dict)) and key not in self.__dataclass_fields__:
                setattr(self, key, None)


def pull_toward_image(kind: str, like: torch.Tensor) -> torch.Tensor:
    """The image an encoder attack pulls toward (`pull_toward`), shaped like `like` (B, 3, H, W) in [0, 1].

    "gray": a flat mid-gray image (PhotoGuard's demo target): the latent of a picture with no content.
    "pattern": a fixed high-contrast stripe pattern (as Mist-style attacks use): the latent of a
    texture that the decoder renders as visible artefacts."""
    b, _, h, w = like.shape
    if kind == "gray":
        return torch.full_like(like, 0.5)
    if kind == "pattern":
        yy, xx = torch.meshgrid(torch.arange(h, device=like.device), torch.arange(w, device=like.device), indexing="ij")
        stripes = ((xx + yy) // 8 % 2).to(like.dtype)
        return torch.stack([stripes, 1 - stripes, stripes], dim=0).expand(b, 3, h, w).clone()
    raise ValueError(f"pull_toward must be 'gray' or 'pattern', got {kind!r}")


def static_video_latents(target: Target, image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Latents of a video in which every frame is `image`: (B, F', C, h, w), no gradient."""
    with torch.no_grad():
        frames = image.unsqueeze(1).expand(-1, num_frames, -1, -1, -1)
        return target.encode_video(frames)


def to_pil(x: torch.Tensor) -> PIL.Image.Image:
    array = (x[0].detach().permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(array)


def attention_energy(maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared Frobenius norm of the F x F maps, divided by F.

    For rows that sum to one this is 1/F when every row is uniform (attention spread evenly over
    frames) and 1 when every row is one-hot (each frame copies a single frame)."""
    assert maps, "no attention maps were captured: does the target record this model's layers?"
    return torch.stack([m.float().pow(2).sum((-2, -1)).mean() / m.shape[-1] for m in maps]).mean()


def attention_distance(maps: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared Frobenius distance between maps, divided by F
    (the mean squared L2 distance between matching rows): 0 when equal, at most 2."""
    assert len(maps) == len(reference) > 0, f"{len(maps)} maps vs {len(reference)} reference maps"
    return torch.stack([(m.float() - r.float()).pow(2).sum((-2, -1)).mean() / m.shape[-1]
                        for m, r in zip(maps, reference)]).mean()
