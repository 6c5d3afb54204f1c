import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything

import numpy as np
import PIL.Image
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_svd():
    from guard.targets import load_target

    return load_target("tiny-svd")


@pytest.fixture(scope="session")
def photo() -> PIL.Image.Image:
    """A smooth colour image with some structure (no file needed)."""
    y, x = np.mgrid[0:96, 0:128] / 96.0
    rgb = np.stack([np.sin(3 * x) * 0.5 + 0.5, np.cos(2 * y + x) * 0.5 + 0.5, (x * y) % 1.0], axis=-1)
    return PIL.Image.fromarray((rgb * 255).astype(np.uint8))
