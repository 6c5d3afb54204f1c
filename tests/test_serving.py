"""guard.serving: what the Space decides without Gradio (admission, GPU seconds, the models offered).
Pure functions: no model is loaded here."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from guard import serving
from guard.io import InputError
from guard.methods import METHODS
from guard.targets import FAMILIES, RANDOM_MODELS

POOL = serving.ModelPool(["tiny-svd"])
GOOD = dict(image="x.png", method="vidfreeze", eps=8, steps=16, model="tiny-svd", seed=0, randomize_seed=False,
            frames=0, motion_bucket=127, video_steps=0, robust=False, state=None)


def test_admission_names_every_value_out_of_bounds():
    assert serving.admission(GOOD, POOL) == {}
    bad = dict(GOOD, eps=0, steps=-1, frames=1, video_steps=99, motion_bucket=300, seed=-1, method="magic",
               model="../../etc")
    refused = serving.admission(bad, POOL)
    assert set(refused) == {"eps", "steps", "frames", "video_steps", "motion_bucket", "seed", "method", "model"}
    for name, sentence in refused.items():
        assert sentence.startswith(f"{name} must") and sentence.endswith("."), sentence
    assert "not offered here" in refused["model"]
    assert "seed" not in serving.admission(dict(bad, randomize_seed=True), POOL)  # a random seed is drawn
    assert POOL.loaded("tiny-svd") is None  # checking a name loads nothing


def test_admission_holds_one_job_per_visitor_and_a_few_per_address():
    assert "already have a job" in serving.admission(GOOD, POOL, session_jobs=1)["image"]
    assert "from your address" in serving.admission(GOOD, POOL, address_jobs=serving.JOBS_PER_ADDRESS)["image"]
    assert serving.admission(GOOD, POOL, address_jobs=serving.JOBS_PER_ADDRESS - 1) == {}
    assert "already have a job" in serving.admission({"guarded": None, "image": "x"}, POOL, 1)["image"]
    assert "Protect the photo first" in serving.admission({"guarded": None}, POOL)["guarded"]


def test_gpu_seconds_grow_with_work_and_are_clamped():
    base = serving.gpu_seconds("svd-xt", "vidfreeze", steps=16, videos=3)
    assert serving.MIN_GPU_SECONDS <= base < serving.gpu_seconds("svd-xt", "vidfreeze", steps=100, videos=3)
    assert serving.gpu_seconds("svd-xt", "noise", steps=100, videos=3) < base  # the control takes no steps
    huge = serving.gpu_seconds("cogvideox", "vidfreeze", steps=10**9, videos=3, frames=10**9, video_steps=10**9)
    assert huge == serving.MAX_GPU_SECONDS
    assert serving.gpu_seconds("svd-xt", steps="not a number") == serving.gpu_seconds("svd-xt")


def test_a_visitor_reads_a_sentence_only_for_what_they_can_mend():
    assert serving.visitor_message(InputError("eps must be between 1 and 32, got 99")).endswith("got 99.")
    assert "ran past the limit" in serving.visitor_message(serving.JobTooLong())
    assert "out of memory" in serving.visitor_message(torch.OutOfMemoryError())
    assert serving.visitor_message(ValueError("a bug deep inside")) is None  # logged with its traceback


def test_the_models_offered_follow_guard_models(monkeypatch):
    monkeypatch.setenv("GUARD_MODELS", "tiny-svd, not-a-model,tiny-cogvideox")
    assert serving.listed_models() == ["tiny-svd", "tiny-cogvideox"]
    monkeypatch.setenv("GUARD_MODELS", "")
    monkeypatch.setattr(serving, "gpu_present", lambda: False)
    monkeypatch.delenv("GUARD_HUB_MODELS", raising=False)
    embedded = (serving.EMBEDDED_PATH / "model_index.json").is_file()
    assert serving.listed_models() == (["embedded"] if embedded else ["tiny-svd"])  # no GPU: no hub models
    monkeypatch.setenv("GUARD_HUB_MODELS", "1")
    assert serving.listed_models()[-3:] == ["svd-xt", "ltx-video", "wan2.2-ti2v-5b"]
    with pytest.raises(InputError, match="not offered here"):
        POOL.get("svd-xt")


def test_a_job_stops_past_its_deadline():
    reports = []
    callback = serving.progress_of(lambda *a, **k: reports.append(k["desc"]), "Protecting", until=float("inf"))
    callback(1, 4, {"loss": 1.0})
    callback(4, 4, {"loss": 0.5})
    assert reports[0].startswith("Protecting: step 1/4, about ") and reports[0].endswith(" s left")
    assert reports[1] == "Protecting: step 4/4"  # nothing left to estimate
    with pytest.raises(serving.JobTooLong):
        serving.progress_of(lambda *a, **k: None, "Protecting", until=0.0)(1, 4)


GPU_MODELS = sorted(serving.BIG_MODELS)


def default_visit(model, size=None):
    """A default "Protect & animate": the page's method and steps, 3 videos at the Space's video defaults."""
    defaults = serving.page_defaults(model)
    return dict(model=model, method=defaults["method"], steps=defaults["steps"], videos=3, frames=defaults["frames"],
                video_steps=defaults["video_steps"], size=size or serving.gpu_size([model]))


def test_a_default_visit_fits_a_minute_of_its_card_except_cogvideox():
    for model in GPU_MODELS:
        seconds = serving.visit_seconds(**default_visit(model))
        if model == "cogvideox":  # 49 frames only: its protection and decodes alone pass a minute (docs/space.md)
            assert seconds > 60
        else:
            assert seconds <= 60, (model, seconds)
    assert serving.visit_seconds(**default_visit("ltx-video")) <= 40


def test_the_reservation_covers_the_estimate_with_its_margin_and_never_twice_it():
    for model in [*GPU_MODELS, "embedded"]:
        for size in serving.GPU_SIZES:
            visit = default_visit(model, size)
            estimate = serving.visit_seconds(**visit)
            reserved = serving.gpu_seconds(**visit) * serving.DURATION_FACTOR[size]  # what the package grants
            assert reserved >= estimate * serving.MARGIN, (model, size)
            if reserved > serving.MIN_GPU_SECONDS * serving.DURATION_FACTOR[size]:  # above the floor
                assert reserved <= 2 * estimate, (model, size)
    assert 1 < serving.MARGIN < 2
    # the whole card is faster: the same job asks for less of it, and xlarge is not multiplied by the package
    assert serving.visit_seconds(**default_visit("svd-xt", "xlarge")) < serving.visit_seconds(**default_visit("svd-xt"))
    assert serving.reserved_seconds(60, "xlarge") == 120 and serving.reserved_seconds(60, "large") == 90


def test_the_package_factors_are_those_of_spaces():
    spaces_zero = pytest.importorskip("spaces.zero")
    from importlib.resources import files

    configs = json.loads(files(spaces_zero).joinpath("configs.json").read_text())
    blackwell = next(c for c in configs if "Blackwell" in c["model"])
    assert blackwell["duration_factor"] == serving.DURATION_FACTOR["large"]
    assert blackwell["xlarge_threshold"] == serving.XLARGE_THRESHOLD


def test_random_weight_models_are_offered_only_by_name_and_cost_as_their_model(monkeypatch):
    assert not any(name in serving.listed_models() for name in RANDOM_MODELS)  # never offered by default
    monkeypatch.setenv("GUARD_MODELS", "random-svd-xt,random-wan2.1-i2v-14b")
    assert serving.listed_models() == ["random-svd-xt", "random-wan2.1-i2v-14b"]
    for name in RANDOM_MODELS:
        real = serving.real_model(name)
        assert real in serving.BIG_MODELS and serving.cost_key(name) == real
        assert "random weights" in serving.model_label(name) and serving.model_note(name) == serving._RANDOM
        args = dict(method="vidfreeze", steps=16, videos=3, size="large")
        assert serving.gpu_seconds(name, **args) == serving.gpu_seconds(real, **args)
    assert serving.gpu_size(["random-wan2.2-i2v-a14b"]) == "xlarge"
    assert [serving._family(m) for m in ("random-ltx-video", "ltx-video", "tiny-wan", "embedded")] == [
        "ltx", "ltx", "wan", "svd"]  # what the stored examples' fingerprint reads for a page's default model
    assert "not yet evaluated" in serving.model_note("ltx-video")
    assert serving.model_label("ltx-video") == "LTX-Video 2B (GPU)"


def test_gpu_size_follows_the_models_and_the_space_variable(monkeypatch):
    assert serving.gpu_size(["embedded", "svd-xt", "cogvideox"]) == "large"
    assert serving.gpu_size(serving.MODEL_SETS["small GPU models"]) == "large"
    assert serving.gpu_size(["wan2.1-i2v-14b"]) == "xlarge"  # 14B: the whole card
    monkeypatch.setitem(serving.START_BYTES, "svd-xt", serving.XLARGE_THRESHOLD + 1)
    assert serving.gpu_size(["svd-xt"]) == "xlarge"  # past the package's threshold it would move there anyway
    monkeypatch.setenv("GUARD_MODELS", "tiny-svd")
    for value, size in (("", "large"), ("xlarge", "xlarge")):
        monkeypatch.setenv("GUARD_GPU_SIZE", value)
        serving.space_gpu_size.cache_clear()
        assert serving.space_gpu_size() == size
    monkeypatch.setenv("GUARD_GPU_SIZE", "huge")
    serving.space_gpu_size.cache_clear()
    with pytest.raises(ValueError, match="GUARD_GPU_SIZE"):
        serving.space_gpu_size()
    serving.space_gpu_size.cache_clear()


def test_the_space_video_defaults_are_lengths_each_family_makes():
    rules = {"svd": lambda f: f >= 2, "cogvideox": lambda f: f == 49, "wan": lambda f: (f - 1) % 4 == 0,
             "ltx": lambda f: (f - 1) % 8 == 0}
    for model in GPU_MODELS:
        family = next(name for name, entry in FAMILIES.items() if model in entry.models)
        cost = serving.GPU_COST[model]
        assert rules[family](cost["frames"]) and 1 <= cost["video_steps"] <= 50, model
        # the pool sets a loaded model to them (0 on the page: these), checked by the model itself
        checked = []
        target = SimpleNamespace(family=family, num_frames=81, num_inference_steps=50, check_num_frames=checked.append)
        serving.space_length(target, model)
        assert (target.num_frames, target.num_inference_steps, checked) == (cost["frames"], cost["video_steps"],
                                                                            [cost["frames"]])
        loaded = serving.gpu_seconds(model, "vidfreeze", steps=16, videos=3, loaded=target, size="large")
        assert loaded == serving.gpu_seconds(model, "vidfreeze", steps=16, videos=3, size="large")
    tiny = SimpleNamespace(num_frames=4, num_inference_steps=3)
    assert serving.space_length(tiny, "tiny-svd") is tiny and tiny.num_frames == 4  # small models keep their own


def test_start_memory_estimates_without_loading_and_flags_the_sets_past_the_threshold():
    assert serving.estimated_start_bytes("ltx-video") == serving.START_BYTES["ltx-video"]
    assert serving.estimated_start_bytes("random-ltx-video") == serving.START_BYTES["ltx-video"]
    sets = {"small": ["embedded", "tiny-svd"], "ltx": ["ltx-video"]}
    report = serving.start_memory(sets, measure=False)
    assert report["small"]["how"] == "estimate" and report["small"]["fits_large"] and report["small"]["size"] == "large"
    assert report["ltx"]["bytes"] == serving.START_BYTES["ltx-video"]
    assert report["small"]["bytes"] > serving.START_BYTES["embedded"]
    for name, models in serving.MODEL_SETS.items():  # the documented sets: the table's sizes agree with gpu_size
        fits = sum(serving.START_BYTES[m] for m in models) <= serving.XLARGE_THRESHOLD
        assert fits or serving.gpu_size(models) == "xlarge", name


def test_the_page_offers_the_methods_guard_has():
    assert set(serving.METHOD_LABELS) <= set(METHODS) and serving.CONTROL in serving.METHOD_LABELS
    assert ("medusa" in serving.METHOD_LABELS) == ("medusa" in METHODS)


def test_each_part_logs_its_seconds_at_its_last_step(caplog):
    callback = serving.progress_of(lambda *a, **k: None, "Protecting with vidfreeze", until=float("inf"))
    with caplog.at_level(logging.INFO, logger="guard.serving"):
        callback(1, 2)
        callback(2, 2)
    lines = [r.getMessage() for r in caplog.records if serving.TIMING_TAG in r.getMessage()]
    assert len(lines) == 1 and "'Protecting with vidfreeze' steps=2 seconds=" in lines[0]


def test_a_default_visit_on_each_default_gpu_model_reserves_at_most_a_minute():
    """The GPU models a Space offers by default: a default "Protect & animate" (the page's method and steps,
    three videos) is estimated to reserve at most 60 s of half a card; CogVideoX, which cannot, is not among
    them."""
    for model in serving.GPU_DEFAULT_MODELS:
        method = serving.page_defaults(model)["method"]
        assert serving.gpu_size([model]) == "large"
        duration = serving.gpu_seconds(model, method, serving.steps_for(method), videos=3, size="large")
        assert serving.reserved_seconds(duration, "large") <= 60, model
    assert "cogvideox" not in serving.GPU_DEFAULT_MODELS
    assert serving.reserved_seconds(serving.gpu_seconds("cogvideox", "vidfreeze", 16, videos=3, size="large"), "large") > 60


def test_model_work_runs_on_one_thread_with_the_callers_context():
    """Entry points run on the process's one model thread whichever Gradio thread calls them, with the
    caller's context variables (Gradio's progress), and their errors reach the caller."""
    import contextvars
    import threading

    var = contextvars.ContextVar("var", default="unset")

    @serving.on_model_thread
    def job(fail=False):
        if fail:
            raise InputError("bad input")
        return threading.get_ident(), var.get()

    def call(value, out):
        var.set(value)
        out.append(job())

    seen = []
    threads = [threading.Thread(target=call, args=(f"caller {i}", seen)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({ident for ident, _ in seen}) == 1  # one thread ran them all
    assert sorted(value for _, value in seen) == ["caller 0", "caller 1", "caller 2"]
    with pytest.raises(InputError, match="bad input"):
        job(fail=True)
