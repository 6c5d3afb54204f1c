"""The Space, as a visitor's client sees it: start app.py on a local port and call its named endpoints
with gradio_client. Uses the embedded model when it is installed, else tiny-svd (random weights)."""

import os
import socket
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

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
    import app

    assert app.AVAILABLE_MODELS == [MODEL], "app was imported earlier with other models listed"
    app.demo.queue(max_size=20)
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
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        call(client, api_name, **kwargs)
    return str(info.value)


def video_path(value) -> str:
    """A gr.Video output as gradio_client returns it (a path, or {"video": path, ...})."""
    return value if isinstance(value, str) else value["video"]


def prepared_example(app, path=EXAMPLE) -> np.ndarray:
    """The upload as the app feeds it to the protection: load_image, then the model's prepare_image."""
    from guard.io import load_image

    image, _ = load_image(path)
    return np.asarray(app.get_target(MODEL).prepare_image(image), dtype=np.int16)


def test_protect_and_animate_end_to_end(served):
    from gradio_client import handle_file

    from guard.io import read_video

    app, client = served
    eps = 6
    (guarded, guarded_file, perturbation, video_original, video_guarded, numbers, plot, seed,
     settings) = call(client, "/protect_and_animate", image=handle_file(str(EXAMPLE)), method="vidfreeze", eps=eps,
                      steps=FAST["steps"], model=MODEL, seed=3, randomize_seed=False, frames=FAST["frames"],
                      motion_bucket=127, video_steps=FAST["video_steps"], robust=False)
    # the guarded image is a lossless PNG within eps of the (prepared) upload, and it changed something
    for path in (guarded, guarded_file):
        with PIL.Image.open(path) as png:
            assert png.format == "PNG" and png.mode == "RGB"
            pixels = np.asarray(png, dtype=np.int16)
    assert Path(guarded).read_bytes() == Path(guarded_file).read_bytes()
    original = prepared_example(app)
    assert pixels.shape == original.shape
    assert 0 < np.abs(pixels - original).max() <= eps
    assert PIL.Image.open(perturbation).size == PIL.Image.open(guarded).size
    # two playable videos of the requested length, at the model's working size
    frames_o, frames_g = read_video(video_path(video_original)), read_video(video_path(video_guarded))
    assert frames_o.shape == frames_g.shape and frames_o.shape[0] == FAST["frames"]
    assert frames_o.shape[1:3] == original.shape[:2]
    # the numbers are those of guard.metrics, the seed is the one asked for
    table = {row[0]: row[1] for row in numbers["data"]}
    assert table["L-inf of the change"] == f"{np.abs(pixels - original).max()}/255"
    assert "motion ratio guarded / original" in table and "PSNR between the two videos" in table
    assert seed == 3 and "seed **3**" in settings
    assert plot is not None


def test_protect_is_deterministic_and_the_download_is_the_image(served):
    from gradio_client import handle_file

    app, client = served
    kwargs = dict(image=handle_file(str(EXAMPLE)), method="photoguard", eps=4, steps=FAST["steps"], model=MODEL,
                  seed=11, randomize_seed=False, robust=False)
    first = call(client, "/protect", **kwargs)
    second = call(client, "/protect", **kwargs)
    guarded, guarded_file, perturbation, _, seed, _ = first
    assert Path(guarded).read_bytes() == Path(guarded_file).read_bytes() == Path(second[0]).read_bytes()
    assert seed == 11
    # the amplified perturbation is mid-gray where nothing changed and uses the full range elsewhere
    delta = np.asarray(PIL.Image.open(guarded), np.int16) - prepared_example(app)
    shown = np.asarray(PIL.Image.open(perturbation), np.int16)
    assert np.all(shown[delta == 0] == 128)
    assert np.all(shown[delta == 4] == 255) and np.all(shown[delta == -4] == 0)


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
    # out-of-range values are refused with a sentence (Gradio's slider check or ours)
    assert "500" in error_message(client, "/protect", **{**good, "eps": 500})
    assert "10000" in error_message(client, "/protect", **{**good, "steps": 10_000})
    assert "Frames" in error_message(client, "/animate", image=good["image"], model=MODEL, seed=0,
                                     randomize_seed=False, frames=1, motion_bucket=127, video_steps=1)


def test_bounds_hold_without_the_sliders(served):
    """The entry points check their arguments themselves (a caller need not go through a slider)."""
    import gradio as gr

    app, _ = served
    args = dict(image=str(EXAMPLE), method="vidfreeze", eps=8, steps=1, model=MODEL, seed=0, randomize_seed=False,
                robust=False, progress=lambda *a, **k: None)
    for name, value, words in (("eps", 500, "Epsilon"), ("eps", 2.5, "Epsilon"), ("steps", 10_000, "Steps"),
                               ("steps", -1, "Steps"), ("seed", -5, "Seed"), ("method", "magic", "method"),
                               ("model", "../../etc", "not offered")):
        with pytest.raises(gr.Error, match=words):
            app.protect_image(**{**args, name: value})


def test_only_listed_models_load(served):
    from gradio_client import handle_file

    app, client = served
    typed = "someone/not-a-listed-model"
    loads, load_target = [], app.load_target
    app.load_target = lambda name, **kwargs: loads.append(name) or load_target(name, **kwargs)
    try:
        message = error_message(client, "/protect", image=handle_file(str(EXAMPLE)), method="vidfreeze", eps=8,
                                steps=1, model=typed, seed=0, randomize_seed=False, robust=False)
    finally:
        app.load_target = load_target
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
        assert PIL.Image.open(guarded).mode == "RGB", path.name


# -- pure helpers ------------------------------------------------------------------------------------------
def test_gpu_durations_grow_with_work_and_stay_bounded(served):
    app, _ = served
    args = ("img", "vidfreeze", 8, 10, MODEL, 0, False, 0, 127, 0, False)
    base = app.protect_and_animate_seconds(*args)
    more_steps = app.protect_and_animate_seconds(*args[:3], 200, *args[4:])
    assert app.MIN_GPU_SECONDS <= base <= more_steps <= app.MAX_GPU_SECONDS
    assert app.protect_and_animate_seconds(*args, progress=None) == base  # called as Gradio calls the entry point
    assert app.protect_seconds("img", "vidfreeze", 8, "not a number", MODEL, 0, False, False) == app.MIN_GPU_SECONDS
    assert app.animate_seconds("img", MODEL, 0, False, 25, 127, 50) >= app.animate_seconds("img", MODEL, 0, False, 4, 127, 2)


def test_request_dirs_are_private(served):
    import stat
    import time

    app, _ = served
    a = app.request_dir()
    stale = a.parent / "req-stale"
    stale.mkdir()
    old = time.time() - app.REQUEST_DIR_MAX_AGE_S - 60
    os.utime(stale, (old, old))
    b = app.request_dir()
    assert a.is_dir() and b.is_dir() and a.parent == b.parent and len({a.name, b.name}) == 2
    assert stat.S_IMODE(a.stat().st_mode) == 0o700  # other local users cannot list a visitor's files
    assert not stale.exists()  # folders older than REQUEST_DIR_MAX_AGE_S are removed
    assert app.safe_stem("/x/../My photo (1).JPG") == "My_photo_1" and app.safe_stem(None) == "image"


@pytest.mark.parametrize("method", ["vidfreeze", "i2vguard", "photoguard", "noise"])
def test_every_method_runs_from_the_page(served, method):
    from gradio_client import handle_file

    app, client = served
    guarded, _, _, _, _, settings = call(client, "/protect", image=handle_file(str(EXAMPLE)), method=method,
                                               eps=8, steps=1, model=MODEL, seed=0, randomize_seed=False,
                                               robust=method == "photoguard")
    assert np.abs(np.asarray(PIL.Image.open(guarded), np.int16) - prepared_example(app)).max() <= 8
    assert f"method **{method}**" in settings


def test_two_visitors_at_once_get_their_own_files(served):
    """Two requests in flight together: each gets its own folder and its own result."""
    from gradio_client import Client, handle_file

    app, client = served
    other = Client(client.src, verbose=False)
    root = app.request_dir().parent
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
