"""Photos guarded at their own size: the differentiable resize is the pipeline's, the PNG has
the photo's size, orientation and colour profile, every pixel within eps, byte-identical per seed."""

import io as _io

import numpy as np
import PIL.Image
import PIL.ImageCms
import pytest
import torch

from guard.io import load_image, save_png
from guard.methods import get_method
from guard.optimize import PGDConfig, protect
from guard.resize import Resampler, View, center_crop_box


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (as tests/test_evaluate.py): on a loaded 2-core CPU two threads made these
    tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def textured(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """A photo-like image: smooth colour gradients plus fine texture, values kept off 0 and 255 (Pillow
    clips its intermediate image there, a float resize does not)."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    smooth = np.stack([np.sin(7 * x) * 0.5 + 0.5, np.cos(5 * y + 3 * x) * 0.5 + 0.5, (4 * x * y) % 1.0], axis=-1)
    noise = np.random.default_rng(seed).integers(0, 25, (height, width, 3))
    return PIL.Image.fromarray((40 + smooth * 150 + noise).astype(np.uint8))


def tensor(image: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def levels(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255)


@pytest.mark.parametrize("size, working", [((640, 427), (256, 192)), ((300, 500), (32, 32)), ((90, 60), (96, 64)),
                                           ((1000, 700), (1024, 576))])
def test_views_are_pillows_lanczos(size, working):
    """The "pipeline" view is Pillow's Lanczos resize of the whole photo (what diffusers' preprocess does
    with a PIL image), the "crop" view the center crop and resize of `prepare_image`, a scaled view the
    two resizes in a row: within one 8-bit level of Pillow per resize (Pillow rounds to 8 bits after each
    pass; the views stay in float32)."""
    photo = textured(*size)
    lanczos = PIL.Image.Resampling.LANCZOS
    expected = {
        View("pipeline"): photo.resize(working, lanczos),
        View("crop"): photo.crop(center_crop_box(*size, *working)).resize(working, lanczos),
    }
    scaled = photo.resize((round(size[0] * 1.1), round(size[1] * 1.1)), lanczos)
    expected[View("crop", 1.1)] = scaled.crop(center_crop_box(*scaled.size, *working)).resize(working, lanczos)
    for view, pil in expected.items():
        ours = levels(Resampler(view, size, working)(tensor(photo)))
        tolerance = 1 if view.scale == 1 else 2
        assert np.abs(ours - np.asarray(pil, dtype=np.float64)).max() <= tolerance, view


def test_the_pipeline_view_is_what_diffusers_preprocess_makes(tiny_svd):
    """diffusers' own `video_processor.preprocess(photo, height, width)` (in [-1, 1]) against the view."""
    photo = textured(300, 200)
    theirs = tiny_svd.pipe.video_processor.preprocess(photo, height=tiny_svd.height, width=tiny_svd.width)
    ours = Resampler(View("pipeline"), photo.size, (tiny_svd.width, tiny_svd.height))(tensor(photo)) * 2 - 1
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 2 / 255 + 1e-6


def test_the_gradient_of_a_view_is_its_transpose():
    """<view(x), g> = <x, view^T(g)> for random x and g: the backward pass is the adjoint."""
    gen = torch.Generator().manual_seed(0)
    resample = Resampler(View("pipeline", 0.93), (123, 77), (40, 32))
    x = torch.rand(1, 3, 77, 123, generator=gen, requires_grad=True)
    g = torch.rand(1, 3, 32, 40, generator=gen)
    (grad,) = torch.autograd.grad((resample(x) * g).sum(), x)
    v = torch.rand(1, 3, 77, 123, generator=gen)
    assert torch.allclose((resample(v) * g).sum(), (v * grad).sum(), rtol=1e-5)


def png(image: PIL.Image.Image, tmp_path, name: str) -> tuple[bytes, np.ndarray]:
    path = save_png(image, tmp_path / name)
    with PIL.Image.open(path) as saved:
        return path.read_bytes(), np.asarray(saved, dtype=np.int16)


@pytest.mark.parametrize("size, method", [((640, 427), "vidfreeze"), ((3000, 2000), "photoguard")])
def test_photos_come_back_at_their_own_size(tiny_svd, tmp_path, size, method):
    """A 640x427 and a 3000x2000 photo: the saved PNG has the photo's size, every pixel within eps of
    the 8-bit original, something changed; the same seed gives the same bytes, another seed others.
    (The large one with the cheapest method: what is tested is the full-size part of the loop.)"""
    photo = textured(*size)
    config = PGDConfig(eps=4 / 255, steps=2, seed=7)
    a = protect(tiny_svd, photo, get_method(method), config)
    b = protect(tiny_svd, photo, get_method(method), config)
    c = protect(tiny_svd, photo, get_method(method), PGDConfig(eps=4 / 255, steps=2, seed=8))
    assert a.history["loss"] and len(a.history["loss"]) == 2
    bytes_a, saved = png(a.image, tmp_path, "a.png")
    assert saved.shape == (size[1], size[0], 3) and a.image.size == a.original.size == size
    diff = np.abs(saved - np.asarray(photo, dtype=np.int16))
    assert 0 < diff.max() <= 4
    assert bytes_a == png(b.image, tmp_path, "b.png")[0]
    assert bytes_a != png(c.image, tmp_path, "c.png")[0]
    assert a.settings["size"] == list(size) and a.settings["working"] == [tiny_svd.width, tiny_svd.height]


def test_colour_profile_and_orientation_are_kept(tiny_svd, tmp_path):
    """A phone JPEG stored sideways with an ICC profile: the guarded PNG is upright, at the upright size,
    with the same profile; a grayscale photo's profile (not an RGB one) is left out, with a notice."""
    profile = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()
    exif = PIL.Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to show
    buffer = _io.BytesIO()
    textured(120, 80).save(buffer, format="JPEG", exif=exif, icc_profile=profile, quality=95)
    buffer.seek(0)
    photo, notices = load_image(PIL.Image.open(buffer))
    assert photo.size == (80, 120) and any("EXIF" in n for n in notices)
    result = protect(tiny_svd, photo, get_method("photoguard"), PGDConfig(eps=3 / 255, steps=1, seed=0))
    _, saved = png(result.image, tmp_path, "g.png")
    with PIL.Image.open(tmp_path / "g.png") as reopened:
        assert reopened.size == (80, 120) and reopened.info.get("icc_profile") == profile
    assert np.abs(saved - np.asarray(photo, dtype=np.int16)).max() <= 3

    gray = textured(60, 40).convert("L")
    buffer = _io.BytesIO()
    gray.save(buffer, format="PNG", icc_profile=b"a gray profile")
    buffer.seek(0)
    rgb, notices = load_image(PIL.Image.open(buffer))
    assert "icc_profile" not in rgb.info and any("colour profile" in n for n in notices)


def test_a_photo_longer_than_max_side_is_shrunk_with_a_notice():
    photo, notices = load_image(textured(500, 200), max_side=250)
    assert photo.size == (250, 100) and any("shrunk to 250x100" in n for n in notices)
    assert load_image(textured(500, 200))[0].size == (500, 200)  # no max_side: as it is


def test_working_size_mode_guards_the_crop(tiny_svd):
    """PGDConfig.working_size: the photo center-cropped and resized first, as guard did before."""
    photo = textured(120, 80)
    result = protect(tiny_svd, photo, get_method("photoguard"), PGDConfig(eps=4 / 255, steps=2, working_size=True))
    assert result.image.size == result.original.size == (tiny_svd.width, tiny_svd.height)
    assert np.array_equal(np.asarray(result.original), np.asarray(tiny_svd.prepare_image(photo)))


def test_full_size_protection_reaches_the_model_through_the_pipelines_resize(tiny_svd, photo):
    """Vid-Freeze at full size lowers the attention energy of the picture the pipeline makes from the
    guarded PNG (Pillow's own 8-bit Lanczos resize, not our float one) by a margin over the full-budget
    noise control: the perturbation survives the model's resize."""
    from guard.methods.vidfreeze import attention_at_draws

    def energy(image: PIL.Image.Image) -> float:
        x = tiny_svd.to_tensor(image.resize((tiny_svd.width, tiny_svd.height), PIL.Image.Resampling.LANCZOS))
        return float(np.mean(attention_at_draws(tiny_svd, x)[0]))

    config = PGDConfig(eps=16 / 255, steps=10, seed=0, views=("pipeline",))
    clean = energy(photo)
    noise = energy(protect(tiny_svd, photo, get_method("noise"), config).image)
    freeze = energy(protect(tiny_svd, photo, get_method("vidfreeze"), config).image)
    assert clean - freeze > 0 and clean - freeze > 2 * abs(clean - noise), (clean, noise, freeze)
