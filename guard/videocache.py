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
    cache = VideoCache(folder="/tmp/guard-videos")         # the same, in files every process shares
    result = jobs.protect_and_animate(target, photo, job, seed, options, cache=cache)

One bound for all models together, in bytes of stored frames, least recently used evicted first: the
models offered share it, and a model nobody uses then holds nothing. Stored frames are read-only copies;
a video larger than the whole bound is not stored. Every method holds one lock, as Gradio runs requests
in threads (with a folder, only around the counters: a file is written whole and renamed, as safe between
threads as between processes). Two requests that miss the same key at once both make the video (the app
runs one model job at a time, so it does not happen there).

Without a folder the videos live in the process's memory. With one (`folder=`; the app's pool uses
GUARD_VIDEO_CACHE_DIR, default `guard-videos` in the temp folder) each video is a file there, so every
process on the machine shares them: on ZeroGPU each GPU call may run in a freshly forked worker, whose
memory dies with it, while its files stay for the next call. A file is `video-<blake2b of the key>.npy`
(`np.save` of the frames), written to a temporary file beside it then renamed over it, so a reader never
sees half a video; reading a video sets its mtime, and the bound evicts the files with the oldest mtimes,
so "least recently used" holds across processes. A file that cannot be read is a miss and is removed.
With a folder the files are the only store (no copy in memory in front): one bound, one copy, and the
operating system's page cache already keeps recently read files in memory. Only files named `video-*`
are ever removed from the folder. The key names the model, not its weights: a folder kept across a change
of weights or of generation code serves the old videos (`clear` it; a Space's temp folder starts empty).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

if TYPE_CHECKING:
    from .jobs import VideoOptions
    from .targets.base import Target

logger = logging.getLogger(__name__)

#: the bound of a cache built without one, in MB of stored uint8 frames (of memory, or of files in a folder;
#: 0: store nothing). One SVD video of 14 frames at 576x1024 is 25 MB, so 512 MB keeps about 20 of them
#: (seven visits' worth).
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
    the least recently used evicted first; in memory, or in files in `folder` shared by every process
    that opens it (see the module's docstring). Thread-safe.

    Arguments:
        max_mb: the bound in MB (10**6 bytes) of stored frames (with a folder: of its video files, the
            frames and a header of about 128 bytes each), >= 0; None: `VIDEO_CACHE_MB`
            (GUARD_VIDEO_CACHE_MB, default 512). 0 stores nothing.
        folder: where the videos are files (made on the first put); None: in this process's memory.

    Example:
        >>> cache = VideoCache(max_mb=1)
        >>> key = ("model", "picture", 0, (None, None, None))
        >>> stored = cache.put(key, np.zeros((2, 4, 4, 3), np.uint8))
        >>> cache.get(key) is stored, stored.flags.writeable, cache.nbytes
        (True, False, 96)
    """

    def __init__(self, max_mb: float | None = None, folder: str | os.PathLike | None = None):
        max_mb = VIDEO_CACHE_MB if max_mb is None else max_mb
        if not max_mb >= 0:
            raise ValueError(f"max_mb must be >= 0, got {max_mb}")
        self.max_bytes = int(max_mb * 1e6)
        self.folder = None if folder is None else Path(folder)
        self._videos: OrderedDict[tuple, np.ndarray] = OrderedDict()  # without a folder; least recently used first
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> np.ndarray | None:
        """The stored frames of `key` (read-only), now the most recently used, or None."""
        # files: read without the lock, which does not reach other processes anyway
        frames = None if self.folder is None else self._read(self.path(key))
        with self._lock:
            if self.folder is None and (frames := self._videos.get(key)) is not None:
                self._videos.move_to_end(key)
            if frames is None:
                self.misses += 1
            else:
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
        if self.folder is not None:
            self._write(self.path(key), stored)  # without the lock, as another process's put
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

    # -- with a folder ---------------------------------------------------------------------------------------
    def path(self, key: tuple) -> Path:
        """The file of `key` in the folder: the same in every process (repr of a key of strings, ints and
        tuples does not depend on the process, unlike hash())."""
        if self.folder is None:
            raise ValueError("path: this cache has no folder")
        return self.folder / f"video-{hashlib.blake2b(repr(key).encode(), digest_size=20).hexdigest()}.npy"

    def _files(self, pattern: str = "video-*") -> list[tuple[int, int, Path]]:
        """(mtime in ns, size, path) of the folder's files matching `pattern`, oldest first; a file removed
        meanwhile by another process is left out."""
        files = []
        for path in self.folder.glob(pattern) if self.folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                files.append((stat.st_mtime_ns, stat.st_size, path))
        return sorted(files)

    @staticmethod
    def _touch(path: Path) -> None:
        # the time set exactly, not the file system's clock (coarse: a few ms), so that two uses in a row
        # keep their order
        now = time.time_ns()
        os.utime(path, ns=(now, now))

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            frames = np.load(path, allow_pickle=False)
            if frames.dtype != np.uint8:
                raise ValueError(f"frames of dtype {frames.dtype}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as e:  # truncated, overwritten by something else: a miss
            logger.warning("video cache: %s unreadable (%s), removed", path, e)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        with contextlib.suppress(FileNotFoundError):  # evicted by another process since: still a hit
            self._touch(path)
        frames.setflags(write=False)
        return frames

    def _write(self, path: Path, frames: np.ndarray) -> None:
        """Write `frames` as `path` (whole or not at all), then evict the oldest files beyond the bound. A
        cache that cannot write (a full disk) logs it and stores nothing: the visitor still gets the video."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=f"{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    np.save(file, frames, allow_pickle=False)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            self._touch(path)
        except OSError as e:
            logger.warning("video cache: could not write %s (%s), not stored", path, e)
            return
        # every file named video-*, temporary ones included (one a killed worker left behind goes in its
        # turn); the new file is the newest, so it goes only when it alone exceeds the bound (its header)
        files = self._files()
        total = sum(size for _, size, _ in files)
        for _, size, old in files:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
            total -= size

    # -- both ------------------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of frames stored now (at most `max_bytes`); with a folder, of its video files."""
        if self.folder is None:
            return self._nbytes
        return sum(size for _, size, _ in self._files("video-*.npy"))

    def __len__(self) -> int:
        return len(self._videos) if self.folder is None else len(self._files("video-*.npy"))

    def __contains__(self, key: tuple) -> bool:
        if self.folder is not None:
            return self.path(key).is_file()
        with self._lock:
            return key in self._videos

    def clear(self) -> None:
        """Remove every video (with a folder: every file named `video-*` in it)."""
        for _, _, path in self._files() if self.folder is not None else ():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._lock:
            self._videos.clear()
            self._nbytes = 0
