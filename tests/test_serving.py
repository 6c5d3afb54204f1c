"""guard.serving: what the Space decides without Gradio (admission, GPU seconds, the models offered).
Pure functions: no model is loaded here."""

import pytest
import torch

from guard import serving
from guard.io import InputError

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
    assert serving.listed_models()[-2:] == ["svd-xt", "cogvideox"]
    with pytest.raises(InputError, match="not offered here"):
        POOL.get("svd-xt")


def test_a_job_stops_past_its_deadline():
    reports = []
    callback = serving.progress_of(lambda *a, **k: reports.append(k["desc"]), "Protecting", until=float("inf"))
    callback(1, 4, {"loss": 1.0})
    assert reports == ["Protecting: step 1/4"]
    with pytest.raises(serving.JobTooLong):
        serving.progress_of(lambda *a, **k: None, "Protecting", until=0.0)(1, 4)
