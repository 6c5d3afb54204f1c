"""From the photo at its own size to the model's working size, the way an animator's pipeline does it,
differentiably: the guarded photo keeps its own size and the perturbation is optimised through the
resize that will actually be applied to it.

Two ways a photo of any size reaches an image-to-video model (`View.kind`):
- "pipeline": the photo handed to the diffusers pipeline as a PIL image of any size. The pipeline's
  `video_processor.preprocess(image, height, width)` (diffusers `VaeImageProcessor`, resize_mode
  "default", resample "lanczos") resizes it to (height, width) with Pillow's Lanczos filter, whatever
  its aspect ratio: a portrait photo is squeezed into SVD's landscape frame.
- "crop": what a careful user does first: center-crop the photo to the model's aspect ratio, then
  resize it to the working size (Lanczos), so that the pipeline's own resize does nothing. This is
  `Target.prepare_image`, and the crop window is `center_crop_box` for both.
Either may follow a small change of scale (`View.scale`): the photo resized by a factor near 1
first (a platform's or an editor's resize), Lanczos again.

Each resize is a linear map along each axis, so a view is two sparse matrices, `rows` (h, H) and
`cols` (w, W), and the working-size image is rows @ x @ cols^T per channel; the gradient of a linear
map is its transpose. The weights are Pillow's own (`Resample.c`, `precompute_coeffs`: the filter
stretched by the downscaling factor, antialiasing included, normalised per output pixel), so the view
of an 8-bit photo matches `PIL.Image.resize(..., LANCZOS)` to within one level (Pillow rounds its
fixed-point weights and the intermediate image to 8 bits; this stays in float32). Where a view
chains two resizes (a scale change), their matrices are multiplied, so no full-size intermediate
image is ever made.

Cost: each full-size pixel enters about six output pixels along each axis (Lanczos' six taps,
stretched by the downscaling factor), about 0.2 billion multiply-adds for a 12-megapixel photo, and
a view keeps no full-size tensor for its backward pass (the matrices are small): memory stays at a
few full-size tensors whatever the model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse
import torch

#: Pillow's Lanczos filter: a sinc windowed by a sinc 3 times wider, support [-3, 3)
LANCZOS_SUPPORT = 3.0
KINDS = ("pipeline", "crop")


def lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's `lanczos_filter`: sinc(x) sinc(x / 3) on [-3, 3), else 0 (np.sinc is sin(pi x) / (pi x))."""
    return np.where((-LANCZOS_SUPPORT <= x) & (x < LANCZOS_SUPPORT), np.sinc(x) * np.sinc(x / LANCZOS_SUPPORT), 0.0)


@lru_cache(maxsize=64)
def resample_matrix(in_size: int, out_size: int) -> scipy.sparse.csr_matrix:
    """(out_size, in_size) weights of Pillow's Lanczos resize of one axis, as `precompute_coeffs` makes
    them: output pixel i is centred at (i + 0.5) * scale in the input, the filter is stretched by the
    scale when shrinking (antialiasing), and each row is normalised to sum to 1."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    center = (np.arange(out_size) + 0.5) * scale
    # Pillow: xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5), clipped
    first = np.clip(np.floor(center - support + 0.5), 0, None).astype(np.int64)
    last = np.clip(np.floor(center + support + 0.5), None, in_size).astype(np.int64)
    taps = int(np.ceil(support)) * 2 + 1
    index = first[:, None] + np.arange(taps)[None, :]  # (out, taps)
    valid = index < last[:, None]
    weights = np.where(valid, lanczos((index - center[:, None] + 0.5) / filterscale), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    rows = np.broadcast_to(np.arange(out_size)[:, None], index.shape)
    matrix = scipy.sparse.csr_matrix((weights[valid], (rows[valid], index[valid])), shape=(out_size, in_size))
    matrix.eliminate_zeros()
    return matrix


def center_crop_box(width: int, height: int, target_width: int, target_height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred window of a width x height image with the
    aspect ratio target_width : target_height (what `Target.prepare_image` crops before resizing)."""
    ratio = target_width / target_height
    if width / height > ratio:  # too wide: crop the sides
        new_width = round(height * ratio)
        left = (width - new_width) // 2
        return left, 0, left + new_width, height
    if width / height < ratio:  # too tall: crop top and bottom
        new_height = round(width / ratio)
        top = (height - new_height) // 2
        return 0, top, width, top + new_height
    return 0, 0, width, height


def _axis(size: int, out: int, scale: float, start: int, length: int) -> scipy.sparse.csr_matrix:
    """One axis of a view: resize `size` pixels by `scale` (to round(size * scale)), keep the window
    [start, start + length) of the result, resize it to `out` pixels."""
    matrix = resample_matrix(length, out)
    scaled = round(size * scale)
    first = resample_matrix(size, scaled) if scaled != size else scipy.sparse.identity(size, format="csr")
    return (matrix @ first[start:start + length]).tocsr()


@dataclass(frozen=True)
class View:
    """One way the photo reaches the model: `kind` "pipeline" or "crop" (see the module docstring),
    after a resize of the whole photo by `scale` (1: the photo as it is)."""

    kind: str = "pipeline"
    scale: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0.25 <= self.scale <= 4.0:
            raise ValueError(f"scale must be in [0.25, 4], got {self.scale}")

    def photo(self, x: torch.Tensor, working: tuple[int, int]) -> torch.Tensor:
        """What the animator hands the pipeline in this view, from a full-size photo (..., 3, H, W): the
        whole photo ("pipeline") or its center crop to the aspect of `working` (w, h) ("crop"), before
        the pipeline's own resize; a slice of `x`, no copy. SVD's CLIP branch reads it as the pipeline
        does (`guard.targets.base.with_photo`). The change of scale is left out: a photo resized by
        0.9-1.1x shows the same picture to CLIP's 224-pixel view."""
        if self.kind == "pipeline":
            return x
        left, top, right, bottom = center_crop_box(x.shape[-1], x.shape[-2], *working)
        return x[..., top:bottom, left:right]

    def matrices(self, size: tuple[int, int], working: tuple[int, int]) -> tuple[scipy.sparse.csr_matrix, ...]:
        """(rows (h, H), cols (w, W)) for a photo of size (W, H) and a working size (w, h), PIL order."""
        (width, height), (out_w, out_h) = size, working
        scaled_w, scaled_h = round(width * self.scale), round(height * self.scale)
        if min(scaled_w, scaled_h) < 1:
            raise ValueError(f"a {width}x{height} photo at scale {self.scale} has no pixels left")
        left, top, right, bottom = (center_crop_box(scaled_w, scaled_h, out_w, out_h) if self.kind == "crop"
                                    else (0, 0, scaled_w, scaled_h))
        return (_axis(height, out_h, self.scale, top, bottom - top),
                _axis(width, out_w, self.scale, left, right - left))


def _to_torch(matrix: scipy.sparse.csr_matrix, device) -> torch.Tensor:
    matrix = matrix.tocsr()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is used for products only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr).long(), torch.from_numpy(matrix.indices).long(),
                                       torch.from_numpy(matrix.data).float(), size=matrix.shape, device=device,
                                       check_invariants=False)


def _apply(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows @ plane @ cols^T for every image plane of x (..., H, W) -> (..., h, w), one plane at a time.
    The order of the products never transposes a full-size plane: shrinking (the forward pass) starts
    with rows, enlarging (the backward pass) ends with rows, whose product comes out contiguous."""
    h, w = rows.shape[0], cols.shape[0]
    out = []
    for plane in x.reshape(-1, *x.shape[-2:]):  # (H, W)
        if plane.numel() >= h * w:
            out.append((cols @ (rows @ plane).T.contiguous()).T)  # (h, W) -> (w, h) -> (h, w)
        else:
            out.append(rows @ (cols @ plane.T.contiguous()).T.contiguous())  # (W, H') -> (H', W) -> (h, w)
    return torch.stack(out).reshape(*x.shape[:-2], h, w)


class _Resample(torch.autograd.Function):
    """y = rows @ x @ cols^T; dL/dx = rows^T @ dL/dy @ cols (its transposes are given: sparse CSR
    products are deterministic on the CPU, transposing one on the fly is not needed)."""

    @staticmethod
    def forward(ctx, x, rows, cols, rows_t, cols_t):
        ctx.transposes = rows_t, cols_t
        return _apply(x, rows, cols)

    @staticmethod
    def backward(ctx, grad):
        rows_t, cols_t = ctx.transposes
        return _apply(grad.contiguous(), rows_t, cols_t), None, None, None, None


class Resampler:
    """A view as a differentiable function of full-size images (B, 3, H, W) in [0, 1] on `device`,
    returning (B, 3, h, w) at the working size (`working` is (w, h), PIL order)."""

    def __init__(self, view: View, size: tuple[int, int], working: tuple[int, int], device="cpu"):
        self.view, self.size, self.working = view, tuple(size), tuple(working)
        rows, cols = view.matrices(self.size, self.working)
        self._matrices = [_to_torch(m, device) for m in (rows, cols, rows.T, cols.T)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        width, height = self.size
        assert x.shape[-2:] == (height, width), f"expected an image of {width}x{height}, got {tuple(x.shape)}"
        return _Resample.apply(x.float(), *self._matrices)


def draw_view(generator: torch.Generator, kinds: tuple[str, ...] = KINDS,
              scales: tuple[float, float] | None = (0.9, 1.1)) -> View:
    """One view per PGD step, from the protection's generator: a kind, equally likely; then, with
    `scales`, half the time the photo as it is (scale 1) and half the time resized first by a factor
    uniform in [scales[0], scales[1]]."""
    draw = lambda: float(torch.rand((), generator=generator, device=generator.device))  # noqa: E731
    kind = kinds[min(int(draw() * len(kinds)), len(kinds) - 1)]
    if scales is None or draw() < 0.5:
        return View(kind)
    return View(kind, scales[0] + (scales[1] - scales[0]) * draw())
