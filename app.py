"""guard's Space: protect a photo, then watch what an image-to-video model makes of it.

Interface only: layout, events and the `@spaces.GPU` entry points with their small adapters. The chain
they run (protect, animate, judge) is `guard.jobs`; the models offered, the page's defaults, the GPU
seconds and the admission of a job are `guard.serving`; what the page shows of a result is `guard.page`.
Importing this module loads no model and reads no stored result: `python app.py` preloads and launches.

Endpoints (also for `gradio_client`): "/protect_and_animate", "/protect", "/animate", "/survive_posting",
with parameters named after the controls; a value out of bounds is refused before the job is queued. The page's
address can carry a result's settings (`guard.links`): "Copy link" gives it, and the page reads it when it opens.
"""

import spaces  # noqa: F401, I001  first: on ZeroGPU it must patch torch before anything initialises CUDA

import contextlib
import functools
import logging
import os
import shutil
from pathlib import Path

import gradio as gr
import numpy as np

from guard import example_cache
from guard import io as gio
from guard import components, jobs, limits, links, page, serving
from guard.components import NamedDropdown, NamedNumber, NamedRadio, NamedSlider, UploadedImage
from guard.quiet import quiet_third_party

logger = logging.getLogger("guard.app")
quiet_third_party()

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLES = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))
POOL = serving.ModelPool(serving.listed_models())  # nothing is loaded until asked (see main)
DEFAULTS = serving.page_defaults(POOL.names[0])


stored_examples = functools.cache(lambda: serving.stored_examples(DEFAULTS))  # read on the first click

# -- adapters: visitor input -> guard, guard's errors -> a sentence -----------------------------------------------
def refusal(message: str) -> gr.Error:
    """An expected refusal: one sentence on the page, no traceback on the server's console."""
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def visitor_errors():
    """Turns what can go wrong into one sentence on the page (serving.visitor_message); an unexpected failure
    is logged once, with its traceback."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes a sentence; unexpected ones are logged
        message = serving.visitor_message(e)
        if message is None:
            logger.exception("unexpected failure")
            message = "Something went wrong on our side; please try again, or with other settings."
        raise refusal(message) from None


def open_upload(image: str | None, state: dict):
    """The upload as 8-bit RGB at its own size (shrunk to limits.MAX_SIDE if larger); each notice about it
    is shown once per session."""
    if not image:
        raise refusal("Upload an image first (or click one of the examples).")
    picture, notices = gio.load_image(image, limits.MAX_SIDE)
    seen = {(example_cache.file_digest(image), notice) for notice in notices} - state["notices"]
    for key in seen:
        gr.Warning(key[1])
    state["notices"] |= seen
    return picture


def new_state(state) -> dict:
    return {"notices": set(), **(state or {})}


# -- ZeroGPU durations (same signatures as the entry points) ---------------------------------------------------
def protect_seconds(image, method, eps, steps, model, *_, **__):
    return serving.gpu_seconds(model, method, steps=steps, loaded=POOL.loaded(model))


def animate_seconds(image, model, seed, randomize_seed, frames, motion_bucket, video_steps, *_, **__):
    return serving.gpu_seconds(model, videos=1, frames=frames, video_steps=video_steps, loaded=POOL.loaded(model))


def protect_and_animate_seconds(image, method, eps, steps, model, seed, randomize_seed, frames, motion_bucket,
                                video_steps, *_, **__):
    # the original, the guarded photo and the control (the noise method is its own control)
    return serving.gpu_seconds(model, method, steps=steps, videos=2 if method == jobs.CONTROL else 3, frames=frames,
                               video_steps=video_steps, loaded=POOL.loaded(model))


def survive_posting_seconds(image, guarded, model, seed, frames, motion_bucket, video_steps, *_, **__):
    return serving.gpu_seconds(model, videos=3, frames=frames, video_steps=video_steps, loaded=POOL.loaded(model))


# -- checks made before a job is queued (Gradio validators): bounds, and one job at a time per visitor ----------
def validator(entry):
    return components.validator(entry, lambda inputs, request: serving.admission(
        inputs, POOL, *serving.jobs_in_flight(demo, request)))


# -- entry points --------------------------------------------------------------------------------------------
@serving.gpu_entry(protect_seconds)
def protect_image(image: str, method: str = DEFAULTS["method"], eps: int = serving.DEFAULT_EPS,
                  steps: int = DEFAULTS["steps"], model: str = DEFAULTS["model"], seed: int = 0,
                  randomize_seed: bool = False, robust: bool = False, state: dict | None = None,
                  progress=gr.Progress()):
    """Guard an image. Returns the guarded PNG (also as a file), the change amplified, the numbers (table
    and JSON: the guarded photo and the noise control against the original), the seed used and the settings."""
    state = new_state(state)
    with visitor_errors():
        target = POOL.get(model)
        job, seed = serving.visitor_job(method, eps, steps, seed, randomize_seed, robust)
        picture = open_upload(image, state)
        result = jobs.protect_and_animate(target, picture, job, None, on_step=serving.progress_of(
            progress, f"Protecting with {method}", serving.deadline()))
        result.numbers["settings"] = page.settings_dict(model, seed, job)
        files = page.write_files(result, job.eps, serving.request_dir(), image, fps=getattr(target, "fps", 8))
        return {guarded_out: files["guarded"], guarded_file: files["guarded"], perturbation_out: files["perturbation"],
                numbers_out: page.numbers_html(result.numbers), numbers_json: result.numbers, seed_out: seed,
                settings_out: page.settings_text(result.numbers["settings"]), session: state}


@serving.gpu_entry(animate_seconds)
def animate_image(image: str, model: str = DEFAULTS["model"], seed: int = 0, randomize_seed: bool = False,
                  frames: int = 0, motion_bucket: int = 127, video_steps: int = 0, state: dict | None = None,
                  progress=gr.Progress()):
    """Make a video from the image as it is (no protection). Returns the video, the seed used and the settings."""
    state = new_state(state)
    with visitor_errors():
        target = POOL.get(model)
        seed = serving.visitor_seed(seed, randomize_seed)
        options = serving.video_options(target, frames, motion_bucket, video_steps)
        frames_ = jobs.animate(target, open_upload(image, state), seed, options,
                               serving.progress_of(progress, "Animating the image", serving.deadline()), POOL.videos)
        path = gio.save_video(frames_, serving.request_dir() / f"{page.safe_stem(image)}.mp4", fps=getattr(target, "fps", 8))
        settings = page.settings_dict(model, seed, options=options)
        return {video_original: str(path), seed_out: seed, settings_out: page.settings_text(settings), session: state}


@serving.gpu_entry(protect_and_animate_seconds)
def protect_and_animate(image: str, method: str = DEFAULTS["method"], eps: int = serving.DEFAULT_EPS,
                        steps: int = DEFAULTS["steps"], model: str = DEFAULTS["model"], seed: int = 0,
                        randomize_seed: bool = False, frames: int = 0, motion_bucket: int = 127, video_steps: int = 0,
                        robust: bool = False, state: dict | None = None, progress=gr.Progress()):
    """Guard an image, then make videos from the original, the guarded image and the control (the noise
    method at the same budget) with the same seed, and judge. Returns the guarded image, the PNG file, the
    change amplified, both videos, the numbers (table), the verdict, the motion plot, the seed used, the
    settings and the numbers as JSON."""
    state = new_state(state)
    with visitor_errors():
        target = POOL.get(model)
        job, seed = serving.visitor_job(method, eps, steps, seed, randomize_seed, robust)
        options = serving.video_options(target, frames, motion_bucket, video_steps)
        until = serving.deadline()
        result = jobs.protect_and_animate(target, open_upload(image, state), job, seed, options,
                                          on_step=serving.progress_of(progress, f"Protecting with {method}", until),
                                          on_video=serving.video_progress(progress, until), cache=POOL.videos)
        result.numbers["settings"] = page.settings_dict(model, seed, job, options)
        files = page.write_files(result, job.eps, serving.request_dir(), image, fps=getattr(target, "fps", 8))
        return result_outputs(files, result.numbers) | {session: state}


def result_outputs(files: dict, numbers: dict, stored: bool = False) -> dict:
    """A judged result on the page, from its files (page.protection_files, page.video_files) and numbers."""
    return {guarded_out: files["guarded"], guarded_file: files["guarded"], perturbation_out: files["perturbation"],
            video_original: files["video_original"], video_guarded: files["video_guarded"],
            numbers_out: page.numbers_html(numbers),
            verdict_out: page.verdict_markdown(numbers) + (" *(stored result)*" if stored else ""),
            plot_out: page.motion_plot(numbers["flows"]), seed_out: numbers["settings"]["seed"],
            settings_out: page.settings_text(numbers["settings"]), numbers_json: numbers}


@serving.gpu_entry(survive_posting_seconds)
def survive_posting(image: str, guarded: str, model: str = DEFAULTS["model"], seed: int = 0, frames: int = 0,
                    motion_bucket: int = 127, video_steps: int = 0, state: dict | None = None,
                    progress=gr.Progress()):
    """Does the protection survive posting? The original photo, the guarded PNG and the control (the noise
    method at the guarded image's own L-inf budget, with the protection's seed) are each posted
    (guard.report.posted) and animated again with the same seed. Returns the posted guarded image, the videos
    of the posted original and guarded image, the numbers (table), the verdict and the numbers as JSON."""
    state = new_state(state)
    with visitor_errors():
        target = POOL.get(model)
        seed = limits.seed(seed)
        options = serving.video_options(target, frames, motion_bucket, video_steps)
        if not guarded:
            raise refusal("Protect the photo first: there is no guarded image to post.")
        picture = open_upload(image, state)
        guarded_pixels = np.asarray(gio.load_image(guarded)[0])
        eps = jobs.budget_of(np.asarray(picture), guarded_pixels)
        job = jobs.Job(method=jobs.CONTROL, eps=eps, seed=jobs.protection_seed(seed))
        result = jobs.survive_posting(target, picture, guarded_pixels, job, seed, options,
                                      on_video=serving.video_progress(progress, serving.deadline()), cache=POOL.videos)
        result.numbers["settings"] = page.settings_dict(model, seed, options=options, posted_eps=eps)
        files = page.write_files(result, eps, serving.request_dir(), image, fps=getattr(target, "fps", 8),
                                 suffix="_posted")
        numbers = result.numbers
        return {posted_out: files["guarded"], posted_video_original: files["video_original"],
                posted_video_guarded: files["video_guarded"], posted_numbers: page.numbers_html(numbers, posted=True),
                posted_verdict: page.verdict_markdown(numbers), posted_json: numbers, session: state}


def show_example(image: str | None, state: dict | None = None):
    """An example's stored result, shown at once, with the controls set to the settings it was made with.
    Without a stored result (a stale cache), only says so."""
    state = new_state(state)
    entry = stored_examples().lookup(image)
    if entry is None:
        return {verdict_out: "No stored result for this example (the model or guard changed since it was stored): "
                             "press **Protect & animate** to compute it.", session: state}
    folder = serving.request_dir()  # a copy: the repository's files are never handed out or changed
    files = {role: str(shutil.copyfile(path, folder / f"{Path(entry.name).stem}_{role}{path.suffix}"))
             for role, path in entry.files.items()}
    return result_outputs(files, entry.numbers, stored=True) | dict(zip(controls, map(DEFAULTS.get, CONTROLS))) | {
        session: state}


# -- links that redo a result (guard.links) --------------------------------------------------------------------
def link_query(image: str | None, numbers: dict | None, *values) -> str:
    """A link's query for what the page shows: the shown result's settings (the seed it used), else the controls'."""
    return links.encode((numbers or {}).get("settings") or dict(zip(CONTROLS, values)), links.example_name(image, EXAMPLES))


def from_link(state: dict | None, request: gr.Request):
    """The page as its link asks: the controls set to its settings and, for an example, the example with its stored
    result if the link asks for its settings, else `run_link` set (the page's script presses Protect & animate) if
    no value was refused. What a link cannot do is said by the buttons (this event is not queued: no notices)."""
    state = new_state(state)
    link = links.decode(request.query_params, DEFAULTS, methods=serving.METHOD_LABELS, models=POOL.names,
                        examples=[Path(p).name for p in EXAMPLES])
    said = {run_status: "\n\n".join([f"⚠️ {problem}" for problem in link.problems]
                                     + ([page.LINK_WITHOUT_PHOTO] if link.fields and not link.example else []))}
    if not link.given:
        return said | {session: state}
    outputs = dict(zip(controls, map(link.settings.get, CONTROLS))) | said | {session: state}
    if link.example is None:
        return outputs
    image = str(shutil.copyfile(EXAMPLES_DIR / link.example, serving.request_dir() / link.example))
    if all(link.settings[name] == DEFAULTS[name] for name in CONTROLS) and stored_examples().lookup(image):
        return show_example(image, state) | said | {image_in: image}
    return outputs | {image_in: image, run_link: not link.problems}


# -- page -----------------------------------------------------------------------------------------------------
CONTROLS = ("method", "eps", "steps", "model", "seed", "randomize_seed", "frames", "video_steps", "motion_bucket",
            "robust")
LAUNCH_OPTIONS = dict(max_file_size=serving.MAX_FILE_SIZE, css=page.CSS)  # tests launch with these too
QUEUE_OPTIONS = dict(max_size=serving.QUEUE_SIZE)

with gr.Blocks(title="guard", delete_cache=(1800, 3600)) as demo:
    gr.Markdown(page.INTRO)
    if POOL.names == ["tiny-svd"] and not os.environ.get("GUARD_MODELS"):  # the fallback, not a choice
        gr.Markdown(page.FALLBACK_NOTE)
    with gr.Accordion("About the methods, the verdict and the numbers", open=False):
        gr.Markdown(page.ABOUT)
    session = gr.State(None)  # per visitor: the notices already shown
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            image_in = UploadedImage(label="Photo to protect", type="filepath", image_mode=None,
                                     sources=["upload", "clipboard"], height=300, elem_id="input-image")
            with gr.Row():
                run_btn = gr.Button("Protect & animate", variant="primary", elem_id="run")
                protect_btn = gr.Button("Protect only", elem_id="protect-only")
                animate_btn = gr.Button("Animate the photo", elem_id="animate-only")
            run_status = gr.Markdown(elem_id="run-status")  # what runs and how long is left, where the visitor looks
            run_link = gr.Checkbox(False, visible="hidden")  # set by a link whose result must be computed
            examples = gr.Examples(examples=[[p] for p in EXAMPLES], inputs=[image_in], label="Examples (stored results)")
            gr.Markdown(page.example_credits(EXAMPLES_DIR), elem_id="example-credits")
            method_in = NamedRadio([(label, key) for key, label in serving.METHOD_LABELS.items()],
                                   value=DEFAULTS["method"], label="Method")
            eps_in = NamedSlider(1, limits.MAX_EPS, value=DEFAULTS["eps"], step=1, label="Epsilon (x/255)", elem_id="eps",
                                 info="the largest change of any pixel, in 8-bit levels")
            steps_in = NamedSlider(0, limits.MAX_STEPS, value=DEFAULTS["steps"], step=1, label="Steps", elem_id="steps",
                                   info="optimisation steps (more: stronger, slower; ignored by the noise control)")
            model_in = NamedDropdown([(serving.model_label(m), m) for m in POOL.names], value=DEFAULTS["model"],
                                     label="Image-to-video model", elem_id="model")
            model_note_out = gr.Markdown(serving.model_note(DEFAULTS["model"]), elem_id="model-note")
            with gr.Accordion("Advanced options", open=False, elem_id="advanced"):
                with gr.Row():
                    seed_in = NamedNumber(value=0, precision=0, minimum=0, maximum=limits.MAX_SEED, label="Seed")
                    randomize_in = gr.Checkbox(value=False, label="Random seed")
                frames_in = NamedSlider(0, limits.MAX_FRAMES, value=0, step=1, label="Frames (0 = the model's default)")
                video_steps_in = NamedSlider(0, limits.MAX_VIDEO_STEPS, value=0, step=1, elem_id="video-steps",
                                             label="Video denoising steps (0 = the model's default)")
                bucket_in = NamedSlider(0, limits.MAX_MOTION_BUCKET, value=127, step=1,
                                        label="Motion bucket (SVD family: more = more motion)")
                robust_in = gr.Checkbox(value=False, label="Robust mode",
                                        info="optimise through random JPEG / resize / crop (slower)")
        with gr.Column(scale=3, min_width=320):
            with gr.Row(equal_height=True):
                guarded_out = UploadedImage(label="Guarded image", format="png", type="filepath", interactive=False,
                                            height=280, buttons=["download", "fullscreen"], elem_classes="guard-out",
                                            elem_id="guarded-image", min_width=150)
                perturbation_out = gr.Image(label="Change, amplified", format="png", type="filepath", interactive=False,
                                            height=280, buttons=["fullscreen"], elem_classes="guard-out",
                                            elem_id="perturbation", min_width=150)
            gr.Markdown(page.OUTPUTS_NOTE, elem_id="outputs-note")
            guarded_file = gr.File(label="Download the guarded image (lossless PNG)", interactive=False,
                                   elem_id="guarded-file")
            with gr.Row(equal_height=True):
                video_original = gr.Video(label="Video: original", autoplay=True, loop=True, height=280,
                                          interactive=False, elem_id="video-original", min_width=150)
                video_guarded = gr.Video(label="Video: guarded", autoplay=True, loop=True, height=280,
                                         interactive=False, elem_id="video-guarded", min_width=150)
            numbers_out = gr.HTML(label="Measured", show_label=True, container=True, elem_id="numbers")
            verdict_out = gr.Markdown(label="Verdict", elem_id="verdict")
            plot_out = gr.Plot(label="Motion per frame", show_label=False, elem_id="motion-plot")
            with gr.Row(equal_height=True):
                seed_out = NamedNumber(0, label="Seed used", precision=0, interactive=False, scale=1, min_width=120)
                settings_out = gr.Markdown(label="Settings", elem_id="guard-settings")
            with gr.Row(equal_height=True):
                link_btn = gr.Button("Copy link", size="sm", scale=0, min_width=110, elem_id="copy-link")
                link_out = gr.Textbox(show_label=False, placeholder="a link that redoes this result", interactive=False,
                                      buttons=["copy"], scale=4, elem_id="link")
            gr.Markdown(page.LINK_NOTE, elem_id="link-note")
            with gr.Accordion("The numbers as JSON", open=False):
                numbers_json = gr.JSON(label="Numbers", elem_id="numbers-json")
            with gr.Column(elem_id="posting-section"):
                gr.Markdown(page.POSTING_NOTE)
                posting_btn = gr.Button("Post it and animate again", elem_id="posting")
                with gr.Row(equal_height=True):
                    posted_video_original = gr.Video(label="Posted: original", autoplay=True, loop=True, height=240,
                                                     interactive=False, elem_id="posted-video-original", min_width=150)
                    posted_video_guarded = gr.Video(label="Posted: guarded", autoplay=True, loop=True, height=240,
                                                    interactive=False, elem_id="posted-video-guarded", min_width=150)
                posted_out = gr.Image(label="Guarded image, posted", format="png", type="filepath", interactive=False,
                                      height=180, buttons=["fullscreen"], elem_classes="guard-out", elem_id="posted-image")
                posted_numbers = gr.HTML(label="Measured after posting", show_label=True, container=True,
                                         elem_id="posted-numbers")
                posted_verdict = gr.Markdown(label="Verdict after posting", elem_id="posted-verdict")
                with gr.Accordion("The numbers after posting as JSON", open=False):
                    posted_json = gr.JSON(label="Numbers after posting")

    # each method starts from its own preset's steps (PhotoGuard's steps are cheap, the control has none)
    method_in.input(lambda m: gr.update(value=serving.steps_for(m)), inputs=method_in, outputs=steps_in, queue=False,
                     api_visibility="private")
    model_in.change(serving.model_note, inputs=model_in, outputs=model_note_out, queue=False, api_visibility="private")
    image_args = [image_in, method_in, eps_in, steps_in, model_in, seed_in, randomize_in]
    video_args = [frames_in, bucket_in, video_steps_in]
    results = [guarded_out, guarded_file, perturbation_out, video_original, video_guarded, numbers_out, verdict_out,
               plot_out, seed_out, settings_out, numbers_json]
    controls = [method_in, eps_in, steps_in, model_in, seed_in, randomize_in, frames_in, video_steps_in, bucket_in,
                robust_in]  # set by a stored result to the settings in CONTROLS
    posted = [posted_out, posted_video_original, posted_video_guarded, posted_numbers, posted_verdict, posted_json]
    common = dict(concurrency_id="model", concurrency_limit=1)  # one model job at a time; per visitor: validators
    stale = results + posted + [link_out]  # what a new run, a new photo or an example makes stale

    def clear(*components, status: str = ""):
        """An event that empties `components` (no stale result while the next one runs), `status` by the buttons."""
        return dict(fn=lambda: [None] * len(components) + [status], outputs=[*components, run_status], queue=False,
                    api_visibility="private")

    def reported(event):  # the status line after a job: done (the result scrolled into view), or stopped
        for then, status, js in ((event.success, "done", page.SCROLL_TO_RESULTS), (event.failure, "failed", None)):
            then(lambda *_, s=page.STATUS[status]: s, outputs=run_status, js=js, queue=False, api_visibility="private")

    reported(run_btn.click(**clear(*stale, status=page.STATUS["protect_and_animate"])).then(
        protect_and_animate, inputs=image_args + video_args + [robust_in, session], outputs=results + [session],
        api_name="protect_and_animate", show_progress_on=[run_status, guarded_out, video_original, video_guarded],
        validator=validator(protect_and_animate), **common))
    reported(protect_btn.click(**clear(*stale, status=page.STATUS["protect"])).then(
        protect_image, inputs=image_args + [robust_in, session],
        outputs=[guarded_out, guarded_file, perturbation_out, numbers_out, numbers_json, seed_out, settings_out, session],
        api_name="protect", show_progress_on=[run_status, guarded_out], validator=validator(protect_image), **common))
    reported(animate_btn.click(**clear(*stale, status=page.STATUS["animate"])).then(
        animate_image, inputs=[image_in, model_in, seed_in, randomize_in] + video_args + [session],
        outputs=[video_original, seed_out, settings_out, session], api_name="animate",
        show_progress_on=[run_status, video_original], validator=validator(animate_image), **common))
    posting_btn.click(**clear(*posted, link_out)).then(
        survive_posting, inputs=[image_in, guarded_out, model_in, seed_out] + video_args + [session],
        outputs=posted + [session], api_name="survive_posting", show_progress_on=[posted_out, posted_video_guarded],
        validator=validator(survive_posting), **common)
    # an example shows its stored result at once (not queued behind model jobs) and the settings it used
    examples.load_input_event.then(
        show_example, inputs=[image_in, session], outputs=results + controls + [session],
        api_name="show_example", api_visibility="undocumented", queue=False).then(**clear(*posted, link_out))
    for chosen in (examples.load_input_event, image_in.upload(**clear(*stale))):  # a new photo: no notice of the last
        chosen.then(fn=None, js=page.CLOSE_NOTICES)
    link_btn.click(link_query, inputs=[image_in, numbers_json, *controls], outputs=link_out, queue=False,
                   api_visibility="private").then(fn=None, js=page.COPY_LINK, inputs=link_out, outputs=link_out)
    demo.load(from_link, inputs=session, outputs=[image_in, *results, *controls, run_status, run_link, session],
              queue=False, api_visibility="private").then(fn=None, js=page.PRESS_RUN, inputs=run_link)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    serving.on_model_thread(POOL.preload)()  # where every job will run (serving.model_thread)
    demo.queue(**QUEUE_OPTIONS).launch(**LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
