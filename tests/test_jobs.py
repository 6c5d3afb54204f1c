"""guard.jobs: the one protect -> animate -> judge chain that the app, the CLI and the evaluation run
(tiny-svd, random weights: the chain's bookkeeping, not an effect)."""

import numpy as np
import pytest

from guard import jobs, limits, report
from guard.io import InputError

FAST = dict(steps=1)
VIDEO = jobs.VideoOptions(frames=3, video_steps=1)


def test_the_control_is_the_noise_method_with_the_protections_seed(tiny_svd, photo):
    """One control everywhere: every pixel channel moved by exactly +-eps (clipped), a random sign drawn
    from the protection's seed, never from a video seed."""
    job = jobs.Job(method="vidfreeze", eps=8, seed=5, **FAST)
    control = np.asarray(jobs.protect_photo(tiny_svd, photo, jobs.control_of(job)).image).astype(int)
    original = np.asarray(photo).astype(int)
    delta = control - original
    inside = (original >= 8) & (original <= 247)
    assert set(np.unique(delta[inside])) == {-8, 8} and 0.45 < (delta[inside] > 0).mean() < 0.55
    noise = np.asarray(jobs.protect_photo(tiny_svd, photo, jobs.Job(method="noise", eps=8, seed=5)).image)
    other = np.asarray(jobs.protect_photo(tiny_svd, photo, jobs.Job(method="noise", eps=8, seed=6)).image)
    assert np.array_equal(noise, control) and not np.array_equal(other, control)  # the protection's seed


def test_protect_and_animate_judges_against_that_control(tiny_svd, photo):
    job = jobs.Job(method="vidfreeze", eps=8, seed=jobs.protection_seed(3), **FAST)
    result = jobs.protect_and_animate(tiny_svd, photo, job, video_seed=3, options=VIDEO)
    assert set(result.pictures) == set(result.videos) == {"original", "guarded", "control"}
    control = jobs.protect_photo(tiny_svd, photo, jobs.control_of(job)).image
    assert np.array_equal(result.pictures["control"], np.asarray(control))
    assert np.array_equal(result.pictures["guarded"], np.asarray(result.protection.image))
    assert all(v.shape[0] == 3 for v in result.videos.values())
    assert np.array_equal(result.videos["original"], jobs.animate(tiny_svd, photo, 3, VIDEO))  # the same seed
    assert result.numbers["verdict"]["kind"] in ("frozen", "changed", "none")
    assert result.numbers["control"]["image"]["linf"] == 8


def test_without_a_video_seed_the_photos_alone_are_measured(tiny_svd, photo):
    result = jobs.protect_and_animate(tiny_svd, photo, jobs.Job(method="noise", eps=4), video_seed=None)
    assert result.videos == {} and "control" not in result.pictures  # the control is its own control
    assert result.numbers["video"] is None and result.numbers["image"]["linf"] == 4


def test_protection_seeds_are_never_video_seeds():
    assert jobs.protection_seed(0) > limits.MAX_SEED
    assert len({jobs.protection_seed(s) for s in (0, 1, limits.MAX_SEED)}) == 3


def test_a_job_takes_its_preset_then_its_own_settings(tiny_svd):
    method, config = jobs.Job(method="vidfreeze", eps=4, seed=9).build(tiny_svd)
    assert config.steps == jobs.default_steps("vidfreeze") and config.eps == 4 / 255 and config.seed == 9
    method, config = jobs.Job(method="vidfreeze", steps=3, params={"layers": 2}, step_size=1).build(tiny_svd)
    assert config.steps == 3 and method.layers == 2 and config.alpha == 1 / 255
    assert jobs.Job(method="noise", steps=50).build(tiny_svd)[1].steps == 0  # the control optimises nothing


@pytest.mark.parametrize("settings, words", [
    (dict(method="vidfrieze"), "method must be one of"),
    (dict(eps=0), "eps must be between 1 and"),
    (dict(steps=-1), "steps must be between 0 and"),
])
def test_a_bad_job_is_refused_naming_the_setting(settings, words):
    with pytest.raises(InputError, match=words):
        jobs.Job(**settings)


def test_video_options_are_checked_for_the_model(tiny_svd):
    assert jobs.VideoOptions(frames=0, video_steps=0).check(tiny_svd) == jobs.VideoOptions()
    for options, words in [(jobs.VideoOptions(frames=1), "frames must be 0"),
                           (jobs.VideoOptions(video_steps=99), "video_steps must be between"),
                           (jobs.VideoOptions(motion_bucket=300), "motion_bucket must be between")]:
        with pytest.raises(InputError, match=words):
            options.check(tiny_svd)


def test_survive_posting_posts_every_photo_alike(tiny_svd, photo):
    job = jobs.Job(method="vidfreeze", eps=6, seed=11, **FAST)
    guarded = np.asarray(jobs.protect_photo(tiny_svd, photo, job).image)
    eps = jobs.budget_of(np.asarray(photo), guarded)
    assert eps == 6
    result = jobs.survive_posting(tiny_svd, photo, guarded, jobs.Job(method="noise", eps=eps, seed=11), 2, VIDEO)
    control = np.asarray(jobs.protect_photo(tiny_svd, photo, jobs.control_of(job)).image)
    assert np.array_equal(result.pictures["control"], report.posted(control))
    assert np.array_equal(result.pictures["guarded"], report.posted(guarded))
    assert result.numbers["verdict"]["sentence"].startswith("After posting: ")


def test_a_guarded_photo_of_another_photo_is_refused(photo):
    original = np.asarray(photo)
    with pytest.raises(InputError, match="was not made from this photo"):
        jobs.budget_of(original, original[:-1])
    with pytest.raises(InputError, match="was not made from this photo"):
        jobs.budget_of(original, original.copy())  # unchanged


@pytest.fixture(scope="module")
def tiny_targets():
    from guard.targets import TINY_MODELS, load_target

    return [load_target(name) for name in TINY_MODELS]


@pytest.mark.parametrize("preset", ["fast", "reference"])
@pytest.mark.parametrize("method", sorted(jobs.METHODS))
def test_every_preset_attacks_frame_counts_the_model_makes(tiny_targets, method, preset):
    """Each method's preset, on every registered family, attacks a frame count the family can make
    (CogVideoX-5B-I2V: its 49 only; at any other count the attack would optimise another positional
    embedding)."""
    for target in tiny_targets:
        built, _ = jobs.Job(method=method, preset=preset).build(target)
        target.check_num_frames(getattr(built, "frames", None))
