"""The Space, as a visitor's client sees it: start app.py on a local port and call its named endpoints
with gradio_client. Uses the embedded model when it is installed, else tiny-svd (random weights)."""

import os
import socket
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from guard import limits, page, serving

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chelsea.png"
EMBEDDED_INDEX = ROOT / "guard" / "models" / "embedded" / "model_index.json"
MODEL = "embedded" if EMBEDDED_INDEX.is_file() else "tiny-svd"
# kept small so that the file runs in about a minute on a loaded 2-core CPU
FAST = dict(steps=2, frames=4, video_steps=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(tmp_dir: Path):
    """Import app.py with only MODEL listed, launch it on a free port; returns (app module, url)."""
    os.environ["GUARD_MODELS"] = MODEL
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    first_import = "app" not in sys.modules
    import app

    assert app.POOL.names == [MODEL], "app was imported earlier with other models listed"
    if first_import:  # importing the app loads no model and reads no stored result (python app.py preloads)
        assert app.POOL.loaded(MODEL) is None and app.stored_examples.cache_info().currsize == 0
    app.demo.queue(**app.QUEUE_OPTIONS)
    _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                quiet=True, **app.LAUNCH_OPTIONS)
    return app, url


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    app, url = launch_app(tmp_path_factory.mktemp("app"))
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield app, client
    client.close()
    app.demo.close()


def call(client, api_name, **kwargs):
    return client.predict(api_name=api_name, **kwargs)


def error_message(client, api_name, **kwargs) -> str:
    """The sentence a refused call gets: from the entry point (AppError) or from the check made before
    the job is queued (ValidationError, which names the parameter)."""
    from gradio_client.exceptions import AppError, ValidationError

    with pytest.raises((AppError, ValidationError)) as info:
        call(client, api_name, **kwargs)
    return str(info.value)


def video_path(value) -> str:
    """A gr.Video output as gradio_client returns it (a path, or {"video": path, ...})."""
    return value if isinstance(value, str) else value["video"]


def prepared_example(app, path=EXAMPLE) -> np.ndarray:
    """The upload as the app feeds it to the protection: load_image, at its own size."""
    from guard.io import load_image

    image, _ = load_image(path, limits.MAX_SIDE)
    return np.asarray(image, dtype=np.int16)


def test_protect_and_animate_end_to_end(served):
    from gradio_client import handle_file

    from guard.io import read_video

    app, client = served
    eps = 6
    (guarded, guarded_file, perturbation, video_original, video_guarded, numbers, verdict, plot, seed,
     settings, numbers_json) = call(client, "/protect_and_animate", image=handle_file(str(EXAMPLE)), method="vidfreeze",
                                    eps=eps, steps=FAST["steps"], model=MODEL, seed=3, randomize_seed=False,
                                    frames=FAST["frames"], motion_bucket=127, video_steps=FAST["video_steps"],
                                    robust=False)
    # the guarded image is a lossless PNG within eps of the upload, at its size, and it changed something
    for path in (guarded, guarded_file):
        with PIL.Image.open(path) as png:
            assert png.format == "PNG" and png.mode == "RGB"
            pixels = np.asarray(png, dtype=np.int16)
    assert Path(guarded).read_bytes() == Path(guarded_file).read_bytes()
    original = prepared_example(app)
    assert pixels.shape == original.shape
    assert 0 < np.abs(pixels - original).max() <= eps
    assert PIL.Image.open(perturbation).size == PIL.Image.open(guarded).size
    # two playable videos of the requested length, at the model's working size (the pipeline resized the photos)
    frames_o, frames_g = read_video(video_path(video_original)), read_video(video_path(video_guarded))
    assert frames_o.shape == frames_g.shape and frames_o.shape[0] == FAST["frames"]
    target = app.POOL.get(MODEL)
    assert frames_o.shape[1:3] == (target.height, target.width)
    # the numbers are those of guard.metrics, in the table and as JSON, with the control beside them
    assert numbers_json["image"]["linf"] == np.abs(pixels - original).max()
    assert f"{np.abs(pixels - original).max()}/255" in numbers and "<th>control</th>" in numbers
    assert numbers_json["control"]["image"]["linf"] == eps  # the control spends the whole budget
    for part in (numbers_json["video"], numbers_json["control"]["video"]):
        assert {"flow_ratio", "change_ratio", "disruption_psnr"} <= set(part)
    assert len(numbers_json["flows"]["original"]) == FAST["frames"] - 1
    # one verdict line, under the numbers, that is the one guard.report gives for these numbers
    from guard.report import verdict as judge

    expected = judge(numbers_json["video"], numbers_json["control"]["video"], numbers_json["image"]["psnr"])
    assert numbers_json["verdict"]["sentence"] == expected.sentence and expected.sentence in verdict
    assert seed == 3 and "seed **3**" in settings and numbers_json["settings"]["seed"] == 3
    assert plot is not None


def test_protect_is_deterministic_and_the_download_is_the_image(served):
    from gradio_client import handle_file

    app, client = served
    kwargs = dict(image=handle_file(str(EXAMPLE)), method="photoguard", eps=4, steps=FAST["steps"], model=MODEL,
                  seed=11, randomize_seed=False, robust=False)
    first = call(client, "/protect", **kwargs)
    second = call(client, "/protect", **kwargs)
    guarded, guarded_file, perturbation, _, _, seed, _ = first
    assert Path(guarded).read_bytes() == Path(guarded_file).read_bytes() == Path(second[0]).read_bytes()
    assert seed == 11
    # the amplified perturbation is gray, as its caption says: mid-gray where a pixel is unchanged, black / white
    # where its largest change is -eps / +eps
    delta = np.asarray(PIL.Image.open(guarded), np.int16) - prepared_example(app)
    shown = np.asarray(PIL.Image.open(perturbation).convert("RGB"), np.int16)
    assert (shown == shown[..., :1]).all(), "the change is shown in colour, its caption says gray"
    largest = np.take_along_axis(delta, np.abs(delta).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    shown = shown[..., 0]
    assert np.all(shown[(delta == 0).all(axis=-1)] == 128)
    assert np.all(shown[largest == 4] == 255) and np.all(shown[largest == -4] == 0) and (largest != 0).any()
    assert np.all(shown[(largest != 0)] != 128)  # a pixel whose channels moved apart is not shown unchanged


def test_animate_and_random_seed(served):
    from gradio_client import handle_file

    from guard.io import read_video

    _, client = served
    video, seed, settings = call(client, "/animate", image=handle_file(str(EXAMPLE)), model=MODEL, seed=0,
                                 randomize_seed=True, frames=FAST["frames"], motion_bucket=60,
                                 video_steps=FAST["video_steps"])
    assert read_video(video_path(video)).shape[0] == FAST["frames"]
    assert 0 <= seed <= 2**31 - 1 and f"seed **{seed}**" in settings


def test_bad_inputs_get_a_sentence(served, tmp_path):
    from gradio_client import handle_file

    _, client = served
    good = dict(image=handle_file(str(EXAMPLE)), method="vidfreeze", eps=8, steps=1, model=MODEL, seed=0,
                randomize_seed=False, robust=False)

    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    assert "not a readable image" in error_message(client, "/protect", **{**good, "image": handle_file(str(not_image))})

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(EXAMPLE.read_bytes()[:2000])
    assert "not a readable image" in error_message(client, "/protect", **{**good, "image": handle_file(str(truncated))})

    tiny = tmp_path / "tiny.png"
    PIL.Image.new("RGB", (8, 8), "red").save(tiny)
    assert "too small" in error_message(client, "/protect", **{**good, "image": handle_file(str(tiny))})

    assert "Upload an image" in error_message(client, "/protect", **{**good, "image": None})
    # out-of-range values are refused with a sentence naming the parameter
    assert "eps must be between 1 and 32, got 500" in error_message(client, "/protect", **{**good, "eps": 500})
    assert "steps must be between 0 and 200, got 10000" in error_message(client, "/protect", **{**good, "steps": 10_000})
    assert "frames must be 0" in error_message(client, "/animate", image=good["image"], model=MODEL, seed=0,
                                               randomize_seed=False, frames=1, motion_bucket=127, video_steps=1)


def test_bounds_hold_without_the_sliders(served):
    """The entry points check their arguments themselves (a caller need not go through a slider)."""
    import gradio as gr

    app, _ = served
    args = dict(image=str(EXAMPLE), method="vidfreeze", eps=8, steps=1, model=MODEL, seed=0, randomize_seed=False,
                robust=False, progress=lambda *a, **k: None)
    for name, value, words in (("eps", 500, "eps must"), ("eps", 2.5, "eps must"), ("steps", 10_000, "steps must"),
                               ("steps", -1, "steps must"), ("seed", -5, "seed must"), ("method", "magic", "method"),
                               ("model", "../../etc", "not offered")):
        with pytest.raises(gr.Error, match=words):
            app.protect_image(**{**args, name: value})


def test_only_listed_models_load(served):
    from gradio_client import handle_file

    app, client = served
    typed = "someone/not-a-listed-model"
    loads, load_target = [], serving.load_target
    serving.load_target = lambda name, **kwargs: loads.append(name) or load_target(name, **kwargs)
    try:
        message = error_message(client, "/protect", image=handle_file(str(EXAMPLE)), method="vidfreeze", eps=8,
                                steps=1, model=typed, seed=0, randomize_seed=False, robust=False)
    finally:
        serving.load_target = load_target
    # refused by the dropdown's choices, or by get_target behind it; never loaded either way
    assert typed in message and ("not in the list of choices" in message or "is not offered here" in message)
    assert loads == []


def test_unusual_images_are_converted(served, tmp_path):
    """RGBA, grayscale, CMYK, 16-bit and EXIF-rotated uploads are protected (guard.io converts them)."""
    from gradio_client import handle_file

    _, client = served
    base = PIL.Image.open(EXAMPLE).convert("RGB").resize((96, 64))
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rotated = tmp_path / "rotated.jpg"
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    base.save(rotated, exif=exif)
    cases = {"rgba.png": rgba, "gray.png": base.convert("L"), "cmyk.jpg": base.convert("CMYK"),
             "gray16.png": PIL.Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257),
             "wide.png": base.resize((4200, 48))}  # longer than MAX_SIDE: shrunk first
    animated = tmp_path / "animated.gif"
    base.save(animated, save_all=True, append_images=[base.rotate(90)], duration=100)
    paths = [rotated, animated]
    for name, image in cases.items():
        image.save(tmp_path / name)
        paths.append(tmp_path / name)
    for path in paths:
        guarded, *_ = call(client, "/protect", image=handle_file(str(path)), method="noise", eps=8, steps=0,
                           model=MODEL, seed=0, randomize_seed=False, robust=False)
        with PIL.Image.open(guarded) as png:  # a black-and-white photo stays black and white
            assert png.mode == ("L" if path.stem.startswith("gray") else "RGB"), path.name


def test_a_grayscale_photo_stays_grayscale(served, tmp_path):
    """The guarded image of a black-and-white photo (stored as grayscale or as RGB with equal channels) is a
    grayscale PNG within eps of it, and so is the control it is judged against."""
    from gradio_client import handle_file

    app, client = served
    for mode in ("L", "RGB"):
        path = tmp_path / f"bw_{mode}.png"
        PIL.Image.open(EXAMPLE).convert("L").resize((96, 64)).convert(mode).save(path)
        guarded, _, perturbation, _, numbers_json, *_ = call(
            client, "/protect", image=handle_file(str(path)), method="photoguard", eps=8, steps=1, model=MODEL, seed=0,
            randomize_seed=False, robust=False)
        with PIL.Image.open(guarded) as png:
            assert png.mode == "L", mode
            change = np.asarray(png, np.int16) - np.asarray(PIL.Image.open(path).convert("L"), np.int16)
        assert 0 < np.abs(change).max() <= 8 and numbers_json["image"]["linf"] == np.abs(change).max()
        assert PIL.Image.open(perturbation).mode == "L"


# -- pure helpers ------------------------------------------------------------------------------------------
def test_gpu_durations_grow_with_work_and_stay_bounded(served):
    app, _ = served
    args = ("img", "vidfreeze", 8, 10, MODEL, 0, False, 0, 127, 0, False)
    base = app.protect_and_animate_seconds(*args)
    more_steps = app.protect_and_animate_seconds(*args[:3], 200, *args[4:])
    assert serving.MIN_GPU_SECONDS <= base <= more_steps <= serving.MAX_GPU_SECONDS
    assert app.protect_and_animate_seconds(*args, progress=None) == base  # called as Gradio calls the entry point
    assert app.protect_seconds("img", "vidfreeze", 8, "not a number", MODEL, 0, False, False) == serving.MIN_GPU_SECONDS
    assert app.animate_seconds("img", MODEL, 0, False, 25, 127, 50) >= app.animate_seconds("img", MODEL, 0, False, 4, 127, 2)


def test_perturbation_view_shows_the_whole_change_and_a_crop_at_full_size(served):
    """A photo larger than DISPLAY_SIDE: the whole change downscaled (every n-th pixel, so +-eps stays
    black and white) beside its centre at 100%; a smaller one is shown as it is."""
    from guard.optimize import Protection

    app, _ = served
    rng = np.random.default_rng(0)
    original = rng.integers(10, 240, (1200, 2000, 3)).astype(np.uint8)
    delta = rng.choice([-4, 0, 4], size=original.shape).astype(np.int16)
    guarded = (original + delta).astype(np.uint8)
    result = Protection(PIL.Image.fromarray(guarded), PIL.Image.fromarray(original), "noise", {})
    view = page.perturbation_view(result, 4)
    side = page.CROP_SIDE
    whole_w = round(2000 * page.DISPLAY_SIDE / 2000)
    assert view.shape == (max(round(1200 * page.DISPLAY_SIDE / 2000), side), whole_w + page.GUTTER + side, 3)
    crop = view[:side, whole_w + page.GUTTER:]
    top, left = (1200 - side) // 2, (2000 - side) // 2
    part = delta[top:top + side, left:left + side]
    largest = np.take_along_axis(part, np.abs(part).argmax(axis=-1)[..., None], axis=-1)  # each pixel's, signed
    expected = np.clip(127.5 + largest * 127.5 / 4, 0, 255).round()
    assert np.array_equal(crop, np.repeat(expected, 3, axis=-1).astype(np.uint8))  # one pixel of the photo per pixel
    assert set(np.unique(view[:side, :whole_w])) <= {0, 128, 255, 220}  # the grain kept, and the red frame
    small = Protection(PIL.Image.fromarray(guarded[:300, :400]), PIL.Image.fromarray(original[:300, :400]), "noise", {})
    assert page.perturbation_view(small, 4).shape == (300, 400, 3)


def test_request_dirs_are_private(served):
    import stat
    import time

    app, _ = served
    a = serving.request_dir()
    stale = a.parent / "req-stale"
    stale.mkdir()
    old = time.time() - serving.REQUEST_DIR_MAX_AGE_S - 60
    os.utime(stale, (old, old))
    b = serving.request_dir()
    assert a.is_dir() and b.is_dir() and a.parent == b.parent and len({a.name, b.name}) == 2
    assert stat.S_IMODE(a.stat().st_mode) == 0o700  # other local users cannot list a visitor's files
    assert not stale.exists()  # folders older than REQUEST_DIR_MAX_AGE_S are removed
    assert page.safe_stem("/x/../My photo (1).JPG") == "My_photo_1" and page.safe_stem(None) == "image"


@pytest.mark.parametrize("method", ["vidfreeze", "freeze", "i2vguard", "photoguard", "noise"])
def test_every_method_runs_from_the_page(served, method):
    from gradio_client import handle_file

    app, client = served
    guarded, *_, settings = call(client, "/protect", image=handle_file(str(EXAMPLE)), method=method,
                                               eps=8, steps=1, model=MODEL, seed=0, randomize_seed=False,
                                               robust=method == "photoguard")
    assert np.abs(np.asarray(PIL.Image.open(guarded), np.int16) - prepared_example(app)).max() <= 8
    assert f"method **{method}**" in settings


def test_two_visitors_at_once_get_their_own_files(served):
    """Two requests in flight together: each gets its own folder and its own result."""
    from gradio_client import Client, handle_file

    app, client = served
    other = Client(client.src, verbose=False)
    root = serving.request_dir().parent
    before = set(root.iterdir())
    jobs = [c.submit(image=handle_file(str(EXAMPLE)), method="noise", eps=8, steps=0, model=MODEL, seed=5,
                     randomize_seed=False, robust=False, api_name="/protect") for c in (client, other)]
    (a, *_, seed_a, _), (b, *_, seed_b, _) = (job.result(timeout=300) for job in jobs)
    other.close()
    folders = set(root.iterdir()) - before
    # two folders on the server, each still holding its own guarded PNG; the same request, the same bytes
    assert len(folders) == 2 and all(len(list(f.glob("*_guarded.png"))) == 1 for f in folders)
    assert (seed_a, seed_b) == (5, 5) and Path(a).read_bytes() == Path(b).read_bytes()


def test_python_app_py_honours_gradio_env(tmp_path):
    """`python app.py` listens where GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say and keeps its files
    under GRADIO_TEMP_DIR."""
    import subprocess
    import sys
    import time

    from gradio_client import Client, handle_file

    port, temp = free_port(), tmp_path / "gradio-temp"
    env = dict(os.environ, GUARD_MODELS=MODEL, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_TEMP_DIR=str(temp), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"app.py exited: {server.stderr.read()[-2000:]}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "app.py did not listen within 240 s"
            time.sleep(1)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads"))
        guarded, *_ = client.predict(image=handle_file(str(EXAMPLE)), method="noise", eps=8, steps=0, model=MODEL,
                                     seed=0, randomize_seed=False, robust=False, api_name="/protect")
        client.close()
        assert PIL.Image.open(guarded).format == "PNG"
        assert list((temp / "guard-requests").glob("req-*/*_guarded.png")), "request files not under GRADIO_TEMP_DIR"
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- named errors, quiet refusals, limits per visitor and per job, posting, stored examples ---------------
@pytest.mark.parametrize("api_name, name, value, message", [
    ("/protect", "steps", -1, "steps must be between 0 and 200, got -1"),
    ("/protect", "seed", -1, "seed must be between 0 and 2147483647, got -1"),
    ("/animate", "frames", -1, "frames must be 0 (the model's default) or a whole number between 2 and 49, got -1"),
    ("/animate", "video_steps", -1, "video_steps must be between 0 and 50, got -1"),
    ("/animate", "motion_bucket", -1, "motion_bucket must be between 0 and 255, got -1"),
    ("/protect_and_animate", "motion_bucket", 300, "motion_bucket must be between 0 and 255, got 300"),
])
def test_api_errors_name_the_parameter(served, capfd, api_name, name, value, message):
    from gradio_client import handle_file

    _, client = served
    image = handle_file(str(EXAMPLE))
    args = {
        "/protect": dict(image=image, method="noise", eps=8, steps=0, model=MODEL, seed=0, randomize_seed=False,
                         robust=False),
        "/animate": dict(image=image, model=MODEL, seed=0, randomize_seed=False, frames=0, motion_bucket=127,
                         video_steps=1),
        "/protect_and_animate": dict(image=image, method="noise", eps=8, steps=0, model=MODEL, seed=0,
                                     randomize_seed=False, frames=2, motion_bucket=127, video_steps=1, robust=False),
    }[api_name]
    text = error_message(client, api_name, **{**args, name: value})
    assert message in text and f"{name}:" in text  # the check made before queueing names the parameter too
    assert "Traceback" not in capfd.readouterr().err  # an expected refusal prints nothing on the console


def test_refusals_print_no_traceback_on_the_console(served, capfd, tmp_path):
    """Refusals raised inside a running job (an unreadable upload, a bad seed given directly) are
    sentences for the visitor, not tracebacks on the server's console."""
    import gradio as gr
    from gradio_client import handle_file

    app, client = served
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    capfd.readouterr()
    assert "not a readable image" in error_message(client, "/protect", image=handle_file(str(broken)), method="noise",
                                                   eps=8, steps=0, model=MODEL, seed=0, randomize_seed=False,
                                                   robust=False)
    with pytest.raises(gr.Error) as info:
        app.animate_image(str(EXAMPLE), MODEL, -4, False, 0, 127, 1, progress=lambda *a, **k: None)
    assert info.value.print_exception is False
    assert "Traceback" not in capfd.readouterr().err


def test_allowed_image_formats_only(served, tmp_path):
    """PIL opens EPS through Ghostscript, among many formats: only PNG, JPEG, WebP, BMP, TIFF and GIF are accepted."""
    from gradio_client import handle_file

    _, client = served
    eps = tmp_path / "drawing.eps"
    PIL.Image.new("RGB", (64, 64), "navy").save(eps, format="EPS")
    message = error_message(client, "/protect", image=handle_file(str(eps)), method="noise", eps=8, steps=0,
                            model=MODEL, seed=0, randomize_seed=False, robust=False)
    assert "not a readable image" in message and "PNG, JPEG, WebP, BMP, TIFF, GIF" in message


def test_notices_name_16_bit_and_are_shown_once(served, monkeypatch, tmp_path):
    app, _ = served
    shown = []
    monkeypatch.setattr(app.gr, "Info", lambda message, *a, **k: shown.append(message))
    monkeypatch.setattr(app.gr, "Warning", lambda message, *a, **k: shown.append(message))
    gray16 = tmp_path / "gray16.png"
    base = np.asarray(PIL.Image.open(EXAMPLE).convert("L").resize((96, 64)), np.uint16) * 257
    PIL.Image.fromarray(base).save(gray16)
    state = None
    quiet = lambda *a, **k: None  # noqa: E731
    state = app.protect_image(str(gray16), "noise", 8, 0, MODEL, 0, False, False, state, progress=quiet)[app.session]
    state = app.animate_image(str(gray16), MODEL, 0, False, 2, 127, 1, state, progress=quiet)[app.session]
    assert any("16-bit image converted to 8 bits" in m for m in shown) and not any("I;16" in m for m in shown)
    # the 16-bit and the grayscale notices, once each; no resize notice: the photo is guarded at its own size
    assert any("stays grayscale" in m for m in shown)
    assert len(shown) == len(set(shown)) == 2, shown


def test_a_notice_names_the_size_given(served, monkeypatch, tmp_path):
    """A photo too narrow once shrunk is refused with the size it was uploaded at, as the command line says."""
    import gradio as gr

    app, _ = served
    narrow = tmp_path / "narrow.png"
    PIL.Image.new("RGB", (1, 5000), "navy").save(narrow)
    with pytest.raises(gr.Error, match="1x5000 is too small") as info:
        app.protect_image(str(narrow), "noise", 8, 0, MODEL, 0, False, False, progress=lambda *a, **k: None)
    assert "x4096" not in str(info.value)


def test_one_job_at_a_time_per_visitor(served):
    """A visitor (one session) cannot queue a second model job while one is queued or running; another
    visitor can."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import ValidationError

    _, client = served
    job = client.submit(image=handle_file(str(EXAMPLE)), method="vidfreeze", eps=8, steps=2, model=MODEL, seed=0,
                        randomize_seed=False, frames=FAST["frames"], motion_bucket=127,
                        video_steps=FAST["video_steps"], robust=False, api_name="/protect_and_animate")
    import time

    deadline = time.monotonic() + 30
    while job.status().code.name not in ("PROCESSING", "IN_QUEUE", "PROGRESS") and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(ValidationError, match="already have a job"):
        client.predict(image=handle_file(str(EXAMPLE)), model=MODEL, seed=0, randomize_seed=False, frames=2,
                       motion_bucket=127, video_steps=1, api_name="/animate")
    other = Client(client.src, verbose=False)
    video, *_ = other.predict(image=handle_file(str(EXAMPLE)), model=MODEL, seed=0, randomize_seed=False, frames=2,
                              motion_bucket=127, video_steps=1, api_name="/animate")
    other.close()
    assert video
    job.result(timeout=300)
    call(client, "/animate", image=handle_file(str(EXAMPLE)), model=MODEL, seed=0, randomize_seed=False, frames=2,
         motion_bucket=127, video_steps=1)  # the first job done: the visitor may start another


def test_a_job_past_its_time_limit_is_stopped(served, monkeypatch):
    import gradio as gr

    app, _ = served
    monkeypatch.setattr(serving, "MAX_JOB_SECONDS", 0.0)
    with pytest.raises(gr.Error, match="ran past the limit"):
        app.protect_image(str(EXAMPLE), "vidfreeze", 8, 2, MODEL, 0, False, False, progress=lambda *a, **k: None)


def test_gpu_estimate_clamps_frames_and_video_steps(served):
    app, _ = served
    huge = app.animate_seconds("img", MODEL, 0, False, 10**9, 127, 10**9)
    assert huge == app.animate_seconds("img", MODEL, 0, False, limits.MAX_FRAMES, 127, limits.MAX_VIDEO_STEPS)
    assert app.protect_and_animate_seconds("img", "vidfreeze", 8, 10**9, MODEL, 0, False, -5, 127, "x", False) == \
        app.protect_and_animate_seconds("img", "vidfreeze", 8, limits.MAX_STEPS, MODEL, 0, False, 0, 127, 0, False)
    assert app.survive_posting_seconds("img", "g", MODEL, 0, 10**9, 127, 10**9) <= serving.MAX_GPU_SECONDS


def test_survive_posting(served):
    """One call: the original, the guarded image and the control are downsized to 0.75x and saved as
    JPEG q=75, animated again, and judged like the first result."""
    from gradio_client import handle_file

    from guard.io import read_video

    app, client = served
    guarded, *_ = call(client, "/protect", image=handle_file(str(EXAMPLE)), method="photoguard", eps=8, steps=2,
                       model=MODEL, seed=5, randomize_seed=False, robust=False)
    posted, video_original, video_guarded, numbers, verdict, numbers_json = call(
        client, "/survive_posting", image=handle_file(str(EXAMPLE)), guarded=handle_file(guarded), model=MODEL, seed=5,
        frames=FAST["frames"], motion_bucket=127, video_steps=FAST["video_steps"])
    size = prepared_example(app).shape[:2]
    assert PIL.Image.open(posted).size == (round(size[1] * 0.75), round(size[0] * 0.75))
    assert read_video(video_path(video_original)).shape == read_video(video_path(video_guarded)).shape
    assert verdict.lstrip("⚠️✅ *").startswith("After posting: ")
    assert numbers_json["settings"]["posting"] == {"scale": 0.75, "jpeg_quality": 75}
    assert numbers_json["settings"]["eps"] == 8 and numbers_json["control"]["video"] is not None
    assert "posted" in numbers
    # a guarded image that was not made from this photo is refused
    message = error_message(client, "/survive_posting", image=handle_file(str(ROOT / "examples" / "coffee.png")),
                            guarded=handle_file(guarded), model=MODEL, seed=5, frames=2, motion_bucket=127,
                            video_steps=1)
    assert "not made from this photo" in message


def test_example_results_are_stored_for_this_app(served):
    """examples/cache holds a result for every example, made by scripts/cache_examples.py for this model,
    these default settings and this code."""
    app, _ = served
    cache = app.stored_examples()
    assert cache.fresh, ("examples/cache is stale (model, default settings or guard's code changed): "
                         "run `OMP_NUM_THREADS=1 python scripts/cache_examples.py`")
    assert cache.settings == app.DEFAULTS and cache.model == MODEL
    for example in app.EXAMPLES:
        entry = cache.lookup(example)
        assert entry is not None, example
        assert entry.numbers["settings"]["method"] == app.DEFAULTS["method"] and entry.numbers["verdict"]["sentence"]


def test_clicking_an_example_answers_in_under_a_second(served):
    """The stored result of an example, through the page's own event (as a click in the browser runs it)."""
    import time

    from gradio_client import handle_file

    app, client = served
    if not app.stored_examples().fresh:
        pytest.fail("examples/cache is stale: run `OMP_NUM_THREADS=1 python scripts/cache_examples.py`")
    # an undocumented endpoint (the page's click event): positional arguments
    client.predict(handle_file(str(EXAMPLE)), api_name="/show_example")  # warm up (first upload, first plot)
    timings = []
    for example in app.EXAMPLES:
        start = time.perf_counter()
        outputs = client.predict(handle_file(example), api_name="/show_example")
        timings.append(time.perf_counter() - start)
        guarded, _, _, video_original, video_guarded, numbers, verdict, *_ = outputs
        assert guarded and video_path(video_original) and video_path(video_guarded) and "stored result" in verdict
    print(f"clicked examples answered in {', '.join(f'{t:.2f}' for t in timings)} s")
    assert max(timings) < 1.0, timings


# -- links that redo a result ------------------------------------------------------------------------------
class LinkRequest:
    """What from_link reads of a gr.Request: the page's query."""

    def __init__(self, query: str):
        from urllib.parse import parse_qsl

        self.query_params = dict(parse_qsl(query))


def test_a_link_redoes_a_result_byte_for_byte(served):
    """A result made with a random seed: its link carries the seed used, and the link's settings give the same
    guarded PNG again."""
    from gradio_client import handle_file

    from guard import links

    app, client = served
    first = call(client, "/protect", image=handle_file(str(EXAMPLE)), method="photoguard", eps=5, steps=1, model=MODEL,
                 seed=0, randomize_seed=True, robust=False)
    query = app.link_query(str(EXAMPLE), first[4], *[app.DEFAULTS[name] for name in app.CONTROLS])
    assert f"seed={first[5]}" in query and "example=chelsea.png" in query and "eps=5" in query
    settings = app.from_link(None, LinkRequest(query))
    values = {name: settings[control] for name, control in zip(app.CONTROLS, app.controls)}
    assert values["seed"] == first[5] and values["randomize_seed"] is False and values["method"] == "photoguard"
    again = call(client, "/protect", image=handle_file(settings[app.image_in]), method=values["method"],
                 eps=values["eps"], steps=values["steps"], model=values["model"], seed=values["seed"],
                 randomize_seed=values["randomize_seed"], robust=values["robust"])
    assert Path(again[0]).read_bytes() == Path(first[0]).read_bytes()
    assert links.example_name(settings[app.image_in], app.EXAMPLES) == "chelsea.png"


def test_a_link_sets_the_controls_and_says_what_it_cannot_carry(served):
    app, _ = served
    # settings only (an uploaded photo's link): the controls, and a line by the button that the photo is not in it
    outputs = app.from_link(None, LinkRequest("method=i2vguard&eps=6&steps=3&seed=77&frames=4&video_steps=2&robust=1"))
    values = {name: outputs[control] for name, control in zip(app.CONTROLS, app.controls)}
    assert values == {**app.DEFAULTS, "method": "i2vguard", "eps": 6, "steps": 3, "seed": 77, "frames": 4,
                      "video_steps": 2, "robust": True}
    assert app.image_in not in outputs and "does not carry the photo" in outputs[app.run_status]
    assert "⚠️" not in outputs[app.run_status]
    # an example at settings with no stored result: the example is set and the run is pressed by the page
    outputs = app.from_link(None, LinkRequest("example=coffee.png&steps=1&seed=4"))
    assert outputs[app.run_link] is True and Path(outputs[app.image_in]).name == "coffee.png"
    assert Path(outputs[app.image_in]).read_bytes() == (ROOT / "examples" / "coffee.png").read_bytes()
    # a bad value: a sentence by the buttons naming it, the default kept, no traceback, and no run pressed
    outputs = app.from_link(None, LinkRequest("example=coffee.png&eps=900&seed=5"))
    assert outputs[app.eps_in] == app.DEFAULTS["eps"] and outputs[app.seed_in] == 5 and outputs[app.run_link] is False
    assert outputs[app.run_status] == (f"⚠️ This link's eps must be between 1 and {limits.MAX_EPS}, got '900': the "
                                       f"page's default ({app.DEFAULTS['eps']}) is used instead.")
    assert "example must be one of" in app.from_link(None, LinkRequest("example=nope.png"))[app.run_status]
    # no link (the host's own names only): the page as it is
    assert app.from_link(None, LinkRequest("__theme=dark")) == {app.run_status: "", app.session: {"notices": set()}}
    # the link of a visitor's own photo names no example, only the settings
    assert "example=" not in app.link_query(str(ROOT / "README.md"), None, *map(app.DEFAULTS.get, app.CONTROLS))
