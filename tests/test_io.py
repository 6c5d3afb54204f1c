"""guard.io: unusual images convert by their format's range, not by their content; a grayscale photo stays
grayscale; a refused size is the size given."""

import io as _io

import numpy as np
import PIL.Image
import PIL.ImageCms
import pytest

from guard.io import InputError, is_grayscale, keep_gray, load_image, save_png


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


# -- a grayscale photo stays grayscale ---------------------------------------------------------------------
def gray_photo(size=(64, 48)) -> np.ndarray:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    return ((x * 3 + y * 2) % 256).astype(np.uint8)  # (H, W)


@pytest.mark.parametrize("as_mode", ["L", "RGB", "LA"])
def test_a_grayscale_photo_is_named_in_a_notice(as_mode, tmp_path):
    """A black-and-white photo, stored as grayscale or as RGB with equal channels, gets a notice; a colour one not."""
    path = tmp_path / "bw.png"
    PIL.Image.fromarray(gray_photo()).convert(as_mode).save(path)
    image, notices = load_image(path)
    assert image.mode == "RGB" and is_grayscale(image)
    assert any("bw.png is a black-and-white (grayscale) photo" in n and "stays grayscale" in n for n in notices)
    colour = np.stack([gray_photo(), gray_photo(), gray_photo() // 2], axis=-1)
    colour_image, colour_notices = load_image(PIL.Image.fromarray(colour))
    assert not is_grayscale(colour_image) and not any("grayscale" in n for n in colour_notices)


def test_keep_gray_projects_the_change_onto_equal_channels_within_eps():
    """A change of each channel on its own (as PGD makes) becomes one change per pixel: gray, within eps."""
    rng = np.random.default_rng(0)
    eps = 8
    original = np.repeat(gray_photo()[..., None], 3, axis=-1)
    for delta in (rng.integers(-eps, eps + 1, original.shape), rng.choice([-eps, eps], original.shape)):
        guarded = np.clip(original.astype(np.int16) + delta, 0, 255).astype(np.uint8)
        assert not is_grayscale(guarded)  # what the loop returns: a colour change on a gray photo
        kept = np.asarray(keep_gray(PIL.Image.fromarray(original), PIL.Image.fromarray(guarded)), dtype=np.int16)
        assert is_grayscale(kept) and np.abs(kept - original).max() <= eps
        expected = np.clip(np.asarray(guarded, np.float32).mean(axis=-1), 0, 255).round()
        assert np.array_equal(kept[..., 0], expected)  # the mean: the nearest gray to the guarded pixel
        assert np.abs(kept - original).max() > 0  # the protection is not thrown away
    colour = rng.integers(0, 256, original.shape).astype(np.uint8)
    guarded = PIL.Image.fromarray(np.clip(colour.astype(np.int16) + 3, 0, 255).astype(np.uint8))
    assert keep_gray(PIL.Image.fromarray(colour), guarded) is guarded  # a colour photo: untouched


def test_save_png_writes_gray_as_grayscale_and_keeps_the_pixels(tmp_path):
    gray = np.repeat(gray_photo()[..., None], 3, axis=-1)
    path = save_png(gray, tmp_path / "gray.png")
    with PIL.Image.open(path) as png:
        assert png.mode == "L" and np.array_equal(np.asarray(png.convert("RGB")), gray)
    colour = gray.copy()
    colour[0, 0, 2] += 1
    with PIL.Image.open(save_png(colour, tmp_path / "colour.png")) as png:
        assert png.mode == "RGB" and np.array_equal(np.asarray(png), colour)
    profiled = PIL.Image.fromarray(gray)
    profiled.info["icc_profile"] = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()
    with PIL.Image.open(save_png(profiled, tmp_path / "profiled.png")) as png:  # an RGB profile: stays RGB
        assert png.mode == "RGB" and png.info.get("icc_profile") == profiled.info["icc_profile"]


# -- the size named is the size given --------------------------------------------------------------------
@pytest.mark.parametrize("size, words", [
    ((1, 5000), "1x5000 is too small (at least 32 px a side)"),
    ((5000, 20), "5000x20 is too small (at least 32 px a side)"),
    ((35, 5000), "35x5000 is too narrow: shrunk to 4096 px on its longer side it would be 29x4096"),
])
@pytest.mark.parametrize("max_side", [4096, None])
def test_a_refused_size_names_the_size_given(size, words, max_side, tmp_path):
    """The app and the command line (which also checks an image before loading a model, without max_side)
    name the photo's own size, not the size it would be shrunk to."""
    path = tmp_path / "narrow.png"
    PIL.Image.new("L", size, 128).save(path)
    if max_side is None and "narrow:" in words:
        load_image(path, max_side)  # 35 px a side is enough unshrunk
        return
    with pytest.raises(InputError) as info:
        load_image(path, max_side)
    assert str(info.value).startswith(f"narrow.png: {words}")
    assert f"{size[0]}x{size[1]}" in str(info.value) and "x4096 is too small" not in str(info.value)


def test_a_shrunk_photo_names_both_sizes(tmp_path):
    path = tmp_path / "wide.png"
    PIL.Image.new("RGB", (5000, 100), "navy").save(path)
    image, notices = load_image(path, 4096)
    assert image.size == (4096, 82)
    assert any("5000x100 is larger than 4096 px on a side: shrunk to 4096x82" in n for n in notices)
