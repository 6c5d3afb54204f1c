"""guard.io: unusual images convert by their format's range, not by their content."""

import io as _io

import numpy as np
import PIL.Image
import pytest

from guard.io import load_image


def reopened(image: PIL.Image.Image, fmt: str) -> PIL.Image.Image:
    buffer = _io.BytesIO()
    image.save(buffer, format=fmt)
    buffer.seek(0)
    return PIL.Image.open(buffer)


@pytest.mark.parametrize("value16, expected", [(65535, 255), (32896, 128), (200, 1), (0, 0)])
def test_16_bit_grayscale_scales_by_its_range(value16, expected):
    """A dark 16-bit image (every value below 256) stays dark: 200/65535 is 1/255, not 200/255."""
    image = reopened(PIL.Image.fromarray(np.full((40, 40), value16, np.uint16)), "PNG")
    assert image.mode.startswith("I")
    rgb, notices = load_image(image)
    assert rgb.mode == "RGB" and (np.asarray(rgb) == expected).all()
    assert any("8 bits" in n for n in notices)


@pytest.mark.parametrize("value, expected", [(1.0, 255), (0.5, 128), (0.002, 1), (0.0, 0), (3.0, 255), (-1.0, 0)])
def test_float_grayscale_is_read_in_zero_to_one(value, expected):
    image = reopened(PIL.Image.fromarray(np.full((40, 40), value, np.float32)), "TIFF")
    assert image.mode == "F"
    rgb, _ = load_image(image)
    assert (np.asarray(rgb) == expected).all()
