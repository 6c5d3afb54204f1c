"""Videos already made, kept so that none is made twice: `VideoCache`, used by `guard.jobs.animate`.

A visit makes three videos (the original's, the guarded photo's, the noise control's). The original's
depends only on the photo, the model, the video seed and the video options, the control's on those and
eps (the control is a deterministic function of the photo, eps and the protection's seed), so a visitor
who tries a second method or eps on the same photo needs only the guarded photo's video. The key is the
content, never a file name or a session:

- the model: the target's name, device and dtype (a model in bfloat16 on a GPU makes other frames than
  the same weights in float32);
- the exact picture handed to the pipeline: a hash of its 8-bit pixels with its mode and shape (an
  original, a control, a posted picture are all just pictures here);
- the video seed and the video options (frames, denoising steps, motion bucket).

    cache = VideoCache()                                   # GUARD_VIDEO_CACHE_MB, default 512
    result = jobs.protect_and_animate(target, photo, job, seed, options, cache=cache)

One bound for all models together, in bytes of stored frames, least recently used evicted first: the
bound is a share of the process's memory, which the models offered share, and a model nobody uses
then holds nothing. Stored frames are read-only copies; a video larger than the whole bound is not
stored. Every method holds one lock, as Gradio runs requests in threads. Two requests that miss the same
key at once both make the video (the app runs one model job at a time, so it does not happen there).

The cache lives in the process that makes the videos: on ZeroGPU, where each GPU call may run in a
freshly forked worker, it lasts only as long as that worker is reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

if TYPE_CHECKING:
    from .jobs import VideoOptions
    from .targets.base import Target

logger = logging.getLogger(__name__)

#: the bound of a cache built without one, in MB of stored uint8 frames (0: store nothing). One SVD
#: video of 14 frames at 576x1024 is 25 MB, so 512 MB keeps about 20 of them (seven visits' worth).
VIDEO_CACHE_MB = float(os.environ.get("GUARD_VIDEO_CACHE_MB", "512"))
if not VIDEO_CACHE_MB >= 0:  # also refuses nan
    raise ValueError(f"GUARD_VIDEO_CACHE_MB must be a number of MB >= 0, got {os.environ['GUARD_VIDEO_CACHE_MB']!r}")


def video_key(target: Target, picture: PIL.Image.Image, seed: int, options: VideoOptions) -> tuple:
    """The key of the video `target` makes from `picture` (as handed to the pipeline) with `seed` and
    `options` (checked, `VideoOptions.check`): (model, picture, seed, options), each part hashable."""
    pixels = np.asarray(picture)
    digest = hashlib.blake2b(pixels.tobytes(), digest_size=20)
    if picture.mode == "P":  # a palette image's pixels are indices into its palette
        digest.update(bytes(picture.getpalette() or ()))
    model = (target.name, str(target.device), str(target.dtype))
    return (model, (picture.mode, pixels.shape, pixels.dtype.str, digest.hexdigest()), int(seed),
            (options.frames, options.video_steps, options.motion_bucket))


class VideoCache:
    """Generated videos (uint8 frames (F, H, W, 3)) by `video_key`, at most `max_mb` MB of frames in all,
    the least recently used evicted first. Thread-safe.

    Arguments:
        max_mb: the bound in MB (10**6 bytes) of stored frames, >= 0; None: `VIDEO_CACHE_MB`
            (GUARD_VIDEO_CACHE_MB, default 512). 0 stores nothing.

    Example:
        >>> cache = VideoCache(max_mb=1)
        >>> key = ("model", "picture", 0, (None, None, None))
        >>> stored = cache.put(key, np.zeros((2, 4, 4, 3), np.uint8))
        >>> cache.get(key) is stored, stored.flags.writeable, cache.nbytes
        (True, False, 96)
    """

    def __init__(self, max_mb: float | None = None):
        max_mb = VIDEO_CACHE_MB if max_mb is None else max_mb
        if not max_mb >= 0:
            raise ValueError(f"max_mb must be >= 0, got {max_mb}")
        self.max_bytes = int(max_mb * 1e6)
        self._videos: OrderedDict[tuple, np.ndarray] = OrderedDict()  # least recently used first
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> np.ndarray | None:
        """The stored frames of `key` (read-only), now the most recently used, or None."""
        with self._lock:
            frames = self._videos.get(key)
            if frames is None:
                self.misses += 1
                return None
            self._videos.move_to_end(key)
            self.hits += 1
            return frames

    def put(self, key: tuple, frames: np.ndarray) -> np.ndarray:
        """Store a read-only copy of `frames` (uint8) under `key`, evicting the least recently used videos
        beyond the bound, and return the copy (also when it alone exceeds the bound and is not stored)."""
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        stored = np.array(frames, copy=True)
        stored.setflags(write=False)
        if stored.nbytes > self.max_bytes:
            return stored
        with self._lock:
            old = self._videos.pop(key, None)
            self._nbytes -= 0 if old is None else old.nbytes
            self._videos[key] = stored
            self._nbytes += stored.nbytes
            while self._nbytes > self.max_bytes:
                _, evicted = self._videos.popitem(last=False)
                self._nbytes -= evicted.nbytes
        return stored

    @property
    def nbytes(self) -> int:
        """Bytes of frames stored now (at most `max_bytes`)."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._videos)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._videos

    def clear(self) -> None:
        with self._lock:
            self._videos.clear()
            self._nbytes = 0
