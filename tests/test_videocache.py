"""guard.videocache through guard.jobs: a video is made once per model, picture, seed and options, so a
second method or eps on the same photo makes only the guarded photo's video (tiny models, random weights:
the bookkeeping, not an effect). The target's `generate` is counted with a wrapper."""

import io
import multiprocessing
import threading

import numpy as np
import PIL.Image
import pytest

from guard import jobs, report
from guard.targets import load_target
from guard.videocache import VideoCache, video_key

FAST = dict(steps=1)
VIDEO = jobs.VideoOptions(frames=3, video_steps=1)


class Counted:
    """A target whose `generate` calls are recorded (the picture's pixels and the seed of each)."""

    def __init__(self, target):
        self.target, self.calls = target, []
        generate = target.generate

        def counted(image, seed=0, **kwargs):
            self.calls.append((np.asarray(image).copy(), seed))
            return generate(image, seed=seed, **kwargs)

        target.generate = counted

    def made(self, since: int = 0) -> list:
        """The pictures whose videos were made after the first `since` calls."""
        return [picture for picture, _ in self.calls[since:]]


@pytest.fixture(scope="module")
def svd():
    return Counted(load_target("tiny-svd"))


def visit(svd, photo, cache, method="vidfreeze", eps=8, seed=3, options=VIDEO, **kwargs):
    job = jobs.Job(method=method, eps=eps, seed=jobs.protection_seed(seed), **FAST)
    return jobs.protect_and_animate(svd.target, photo, job, seed, options, cache=cache, **kwargs)


def is_among(picture, pictures) -> bool:
    return any(p.shape == picture.shape and np.array_equal(p, picture) for p in pictures)


@pytest.fixture(scope="module")
def visits(svd, photo):
    """One visitor's presses of "Protect & animate" on the same photo and seed, with one cache, and the
    pictures whose videos each made: (results, made, cache)."""
    cache, results, made = VideoCache(max_mb=100), {}, {}
    for name, method, eps in [("first", "vidfreeze", 8), ("second method", "freeze", 8), ("second eps", "freeze", 4),
                              ("the same again", "freeze", 4)]:
        before = len(svd.calls)
        results[name] = visit(svd, photo, cache, method=method, eps=eps)
        made[name] = svd.made(before)
    return results, made, cache


def test_a_second_method_makes_only_the_guarded_video(visits):
    results, made, cache = visits
    assert len(made["first"]) == 3
    assert len(made["second method"]) == 1
    assert np.array_equal(made["second method"][0], results["second method"].pictures["guarded"])
    for role in ("original", "control"):
        assert np.array_equal(results["second method"].videos[role], results["first"].videos[role])


def test_a_second_eps_makes_the_guarded_video_and_its_control_only(visits, photo):
    results, made, cache = visits
    assert len(made["second eps"]) == 2 and not is_among(np.asarray(photo), made["second eps"])
    assert is_among(results["second eps"].pictures["control"], made["second eps"])
    assert is_among(results["second eps"].pictures["guarded"], made["second eps"])


def test_the_same_settings_again_make_nothing(visits):
    results, made, cache = visits
    assert made["the same again"] == []
    assert len(cache) == 6  # the original's, two controls', three guarded photos'


def test_a_cached_result_is_the_uncached_one_byte_for_byte(visits, svd, photo):
    """Also: without a cache every video is made."""
    results, made, cache = visits
    before = len(svd.calls)
    uncached = visit(svd, photo, None, method="freeze")
    assert len(svd.calls) - before == 3
    cached = results["second method"]  # the original's and the control's videos from the cache
    for role in uncached.videos:
        assert cached.videos[role].tobytes() == uncached.videos[role].tobytes()
        assert cached.videos[role].shape == uncached.videos[role].shape
    assert cached.numbers == uncached.numbers


@pytest.mark.parametrize("change", [dict(seed=4), dict(options=jobs.VideoOptions(frames=2, video_steps=1)),
                                    dict(options=jobs.VideoOptions(frames=3, video_steps=2)),
                                    dict(options=jobs.VideoOptions(frames=3, video_steps=1, motion_bucket=30))])
def test_another_seed_or_video_option_makes_the_video_again(svd, photo, change):
    cache, picture = VideoCache(max_mb=100), np.asarray(photo)
    jobs.animate(svd.target, picture, 3, VIDEO, cache=cache)
    before = len(svd.calls)
    jobs.animate(svd.target, picture, change.get("seed", 3), change.get("options", VIDEO), cache=cache)
    assert len(svd.calls) - before == 1 and len(cache) == 2


def test_another_model_makes_its_own_video(svd, photo):
    cache, picture = VideoCache(max_mb=100), np.asarray(photo)
    other = Counted(load_target("tiny-svd"))
    other.target.name = "another-svd"  # the same architecture, another model as far as a key can tell
    jobs.animate(svd.target, picture, 3, VIDEO, cache=cache)
    jobs.animate(other.target, picture, 3, VIDEO, cache=cache)
    assert len(other.calls) == 1 and len(cache) == 2
    cogvideox = load_target("tiny-cogvideox")
    assert video_key(cogvideox, photo, 3, VIDEO) != video_key(svd.target, photo, 3, VIDEO)


def test_survive_posting_makes_only_the_posted_guarded_video_again(visits, svd, photo):
    results, made, _ = visits
    cache = VideoCache(max_mb=100)
    guarded = [results[name].pictures["guarded"] for name in ("first", "second method")]  # both at eps 8
    control = jobs.Job(method=jobs.CONTROL, eps=8, seed=jobs.protection_seed(3))
    jobs.survive_posting(svd.target, photo, guarded[0], control, 3, VIDEO, cache=cache)
    before = len(svd.calls)
    result = jobs.survive_posting(svd.target, photo, guarded[1], control, 3, VIDEO, cache=cache)
    made = svd.made(before)
    assert len(made) == 1 and np.array_equal(made[0], report.posted(guarded[1]))
    assert np.array_equal(made[0], result.pictures["guarded"])


def test_a_cached_video_reports_its_steps_done_at_once(svd, photo):
    cache, options, reports = VideoCache(max_mb=100), jobs.VideoOptions(frames=2, video_steps=2), []
    for _ in range(2):
        jobs.animate(svd.target, photo, 3, options, callback=lambda step, steps: reports.append((step, steps)),
                     cache=cache)
    assert reports == [(1, 2), (2, 2), (2, 2)]  # made: one report per denoising step; found: all done at once


# -- the cache alone -----------------------------------------------------------------------------------------
def frames(value: int, nbytes: int = 1000) -> np.ndarray:
    return np.full((1, 1, nbytes // 3, 3), value, np.uint8)  # 999 bytes


def test_the_least_recently_used_video_is_evicted_at_the_bound():
    cache = VideoCache(max_mb=0.003)  # 3000 bytes: three videos of 999
    for name in "abc":
        cache.put(name, frames(ord(name)))
    assert len(cache) == 3 and cache.nbytes == 2997
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("d", frames(4))
    assert "b" not in cache and all(name in cache for name in "acd") and cache.nbytes <= cache.max_bytes
    cache.put("e", frames(5, 2001))  # 2001 bytes: evicts "a" and "c", the least recently used
    assert set(cache._videos) == {"d", "e"} and cache.nbytes == 999 + 2001
    cache.put("f", frames(6, 4000))  # larger than the whole bound: returned, not stored
    assert "f" not in cache and len(cache) == 2


def test_stored_frames_are_read_only_copies():
    cache = VideoCache(max_mb=1)
    video = frames(7)
    stored = cache.put("a", video)
    video[:] = 0  # the caller's array changes, the stored copy does not
    assert (cache.get("a") == 7).all() and not stored.flags.writeable
    with pytest.raises(ValueError):
        cache.get("a")[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="must be uint8"):
        cache.put("b", video.astype(np.float32))


def test_a_bound_of_zero_stores_nothing_and_a_negative_one_is_refused():
    cache = VideoCache(max_mb=0)
    assert (cache.put("a", frames(1)) == 1).all() and len(cache) == 0
    with pytest.raises(ValueError, match="max_mb must be >= 0"):
        VideoCache(max_mb=-1)


def test_the_key_is_the_content(svd, photo):
    picture = np.asarray(photo)
    key = video_key(svd.target, photo, 3, VIDEO)
    assert video_key(svd.target, PIL.Image.fromarray(picture.copy()), 3, VIDEO) == key
    changed = picture.copy()
    changed[0, 0, 0] ^= 1
    assert video_key(svd.target, PIL.Image.fromarray(changed), 3, VIDEO) != key
    assert video_key(svd.target, PIL.Image.fromarray(picture[:, :-1]), 3, VIDEO) != key


def test_threads_share_a_cache_safely():
    cache = VideoCache(max_mb=0.02)  # room for 20 of the 100 keys below
    errors = []

    def work(worker):
        rng = np.random.default_rng(worker)
        try:
            for _ in range(500):
                key = int(rng.integers(100))
                found = cache.get(key)
                if found is None:
                    cache.put(key, frames(key))
                else:
                    assert (found == key).all()
        except Exception as e:  # noqa: BLE001 - handed to the main thread's assertion
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.nbytes == sum(v.nbytes for v in cache._videos.values()) <= cache.max_bytes
    assert cache.hits + cache.misses == 8 * 500 and cache.hits > 0


# -- in a folder: shared between processes -------------------------------------------------------------------
def test_two_caches_on_one_folder_share_their_videos(tmp_path):
    writer, reader = VideoCache(max_mb=1, folder=tmp_path), VideoCache(max_mb=1, folder=tmp_path)
    stored = writer.put("a", frames(7))
    found = reader.get("a")
    assert found is not stored and np.array_equal(found, stored) and found.dtype == np.uint8
    assert not found.flags.writeable
    assert "a" in reader and len(reader) == 1 and reader.nbytes == writer.nbytes > stored.nbytes  # + a header
    assert reader.get("b") is None and (reader.hits, reader.misses) == (1, 1)
    assert [path.name for path in tmp_path.iterdir()] == [writer.path("a").name]  # no temporary file left


def test_a_video_made_through_a_folder_is_not_made_again_by_another_cache_on_it(svd, photo, tmp_path):
    """A second visit in a fresh process (another cache object on the same folder) makes nothing."""
    picture = np.asarray(photo)
    made = jobs.animate(svd.target, picture, 3, VIDEO, cache=VideoCache(max_mb=100, folder=tmp_path))
    before = len(svd.calls)
    found = jobs.animate(svd.target, picture, 3, VIDEO, cache=VideoCache(max_mb=100, folder=tmp_path))
    assert len(svd.calls) == before
    assert found.tobytes() == made.tobytes() and found.shape == made.shape


def _put_in_a_child(folder) -> None:
    VideoCache(max_mb=1, folder=folder).put(("model", 3), frames(9))


def test_a_video_put_in_a_forked_process_is_found_by_its_parent(tmp_path):
    """As on ZeroGPU: the GPU call runs in a fork of the app, whose memory dies with it."""
    cache = VideoCache(max_mb=1, folder=tmp_path)  # the parent's, inherited by the fork (as the app's pool)
    child = multiprocessing.get_context("fork").Process(target=_put_in_a_child, args=(tmp_path,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert (cache.get(("model", 3)) == 9).all()


def test_the_folder_evicts_the_least_recently_used_video_at_the_bound(tmp_path):
    header = len(_npy_bytes(frames(0))) - 999
    cache = VideoCache(max_mb=3 * (999 + header) / 1e6, folder=tmp_path)  # three files of 999 bytes of frames
    for name in "abc":
        cache.put(name, frames(ord(name)))
    assert len(cache) == 3 and cache.nbytes == 3 * (999 + header)
    assert VideoCache(folder=tmp_path).get("a") is not None  # read by another cache: "b" is now the oldest
    cache.put("d", frames(4))
    assert "b" not in cache and all(name in cache for name in "acd") and cache.nbytes <= cache.max_bytes
    cache.put("e", frames(5, 2001))  # evicts "a" and "c", the least recently used
    assert {name for name in "abcde" if name in cache} == {"d", "e"} and cache.nbytes <= cache.max_bytes
    cache.put("f", frames(6, 4000))  # larger than the whole bound: returned, not stored
    assert "f" not in cache and len(cache) == 2


def test_a_truncated_file_is_a_miss_and_is_removed(tmp_path):
    cache = VideoCache(max_mb=1, folder=tmp_path)
    cache.put("a", frames(7))
    cache.put("b", frames(8))
    whole = cache.path("a").read_bytes()
    cache.path("a").write_bytes(whole[: len(whole) // 2])  # a file cut short (not one this cache writes)
    cache.path("b").write_bytes(b"")
    assert cache.get("a") is None and not cache.path("a").exists()
    assert cache.get("b") is None and not cache.path("b").exists()
    assert cache.misses == 2 and len(cache) == 0
    assert (cache.put("a", frames(7)) == cache.get("a")).all()  # made again, stored again


def test_clear_removes_the_videos_and_nothing_else_in_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    cache = VideoCache(max_mb=0.002, folder=tmp_path)
    for name in "abc":
        cache.put(name, frames(ord(name)))  # evicts the videos at the bound, never notes.txt
    cache.clear()
    assert len(cache) == 0 and [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_threads_share_a_folder_safely(tmp_path):
    cache = VideoCache(max_mb=0.01, folder=tmp_path)  # room for about 9 of the 30 keys below
    errors = []

    def work(worker):
        rng = np.random.default_rng(worker)
        try:
            for _ in range(100):
                key = int(rng.integers(30))
                found = cache.get(key)
                if found is None:
                    cache.put(key, frames(key))
                else:
                    assert (found == key).all() and found.shape == (1, 1, 333, 3)
        except Exception as e:  # noqa: BLE001 - handed to the main thread's assertion
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.nbytes <= cache.max_bytes and cache.hits > 0 and not list(tmp_path.glob("*.tmp"))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
