"""Stored results of the app's example photos at the page's default settings.

`python scripts/cache_examples.py` runs the app's own entry point on every example image and stores
what it returned in `examples/cache/` (the guarded PNG, the amplified perturbation, both videos and
the numbers, verdict included); the app shows them when an example is clicked, so that a visitor
sees a full result at once instead of waiting for the model. Nothing in the folder is edited by hand.

An entry is used only while the fingerprint in `manifest.json` matches the running app's: the same
model files, the same default settings and the same code of everything that makes a result (the
protection, the models, the videos, the measurements: guard's `FINGERPRINT_CODE`). After any of these
changes the app runs a clicked example live like any upload, logs that the cache is stale, and the
test suite fails until the script has been run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
CACHE_DIR = PACKAGE.parent / "examples" / "cache"
MANIFEST = "manifest.json"
#: the parts of guard/ whose code decides a stored result: the chain (jobs.py: the protection's seed, the
#: control, the videos), the page's defaults and checks (serving.py), what is written and shown (page.py),
#: and everything they run, with the Target contract (targets/base.py); the model's own family module is
#: added by `fingerprint` (another family's file decides nothing here). Not the CLI, the evaluation or
#: this file. app.py holds no such decision.
FINGERPRINT_CODE = ("io.py", "jobs.py", "limits.py", "metrics.py", "optimize.py", "page.py", "presets.py", "report.py",
                    "resize.py", "serving.py", "methods", "targets/base.py")


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identifies an example image whatever it is named)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model: str, model_dir: str | os.PathLike | None, settings: dict, family_module: str) -> str:
    """What a stored result depends on: model name and files (not its model card), settings, code
    (`FINGERPRINT_CODE` and the model's family module, e.g. "svd" for guard/targets/svd.py)."""
    digest = hashlib.sha256(json.dumps({"model": model, "settings": settings}, sort_keys=True).encode())
    files = []
    if model_dir is not None and Path(model_dir).is_dir():
        files += [(f"model/{p.relative_to(model_dir).as_posix()}", p) for p in sorted(Path(model_dir).rglob("*"))
                  if p.is_file() and p.suffix != ".md"]
    for part in (*FINGERPRINT_CODE, f"targets/{family_module}.py"):
        path = PACKAGE / part
        paths = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files += [(f"guard/{p.relative_to(PACKAGE).as_posix()}", p) for p in paths if p.is_file()]
    for name, path in files:
        data = path.read_bytes()
        if path.suffix in (".py", ".json"):
            data = data.replace(b"\r\n", b"\n")  # the same text checked out on any system
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:20]


@dataclass
class Entry:
    """One example's stored result: its files (role -> path) and the numbers the app computed."""

    name: str
    files: dict[str, Path]
    numbers: dict
    seconds: float = 0.0


@dataclass
class ExampleCache:
    folder: Path
    fingerprint: str = ""  # of the stored results
    expected: str = ""  # of the running app
    settings: dict = field(default_factory=dict)
    model: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)  # image digest -> entry

    @property
    def fresh(self) -> bool:
        return bool(self.entries) and self.fingerprint == self.expected

    def lookup(self, image: str | os.PathLike | None) -> Entry | None:
        """The stored result of an image file (matched by content), or None (unknown image, stale cache)."""
        if not image or not self.fresh or not Path(image).is_file():
            return None
        return self.entries.get(file_digest(image))


def load(expected: str, folder: str | os.PathLike = CACHE_DIR) -> ExampleCache:
    """Read the cache in `folder`; `fresh` tells whether it was made for the `expected` fingerprint."""
    folder = Path(folder)
    cache = ExampleCache(folder=folder, expected=expected)
    path = folder / MANIFEST
    if not path.is_file():
        return cache
    manifest = json.loads(path.read_text())
    cache.fingerprint, cache.settings, cache.model = manifest["fingerprint"], manifest["settings"], manifest["model"]
    for digest, item in manifest["entries"].items():
        files = {role: folder / name for role, name in item["files"].items()}
        if all(p.is_file() for p in files.values()):
            cache.entries[digest] = Entry(item["name"], files, item["numbers"], item.get("seconds", 0.0))
    return cache


def write(folder: str | os.PathLike, fingerprint_: str, model: str, settings: dict, results: list[dict],
          made_with: str, machine: dict) -> Path:
    """Replace the cache in `folder` with `results`: dicts with "image" (the example's path), "files"
    (role -> a file to copy), "numbers" (JSON-safe) and "seconds" (how long the live run took)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    entries = {}
    for result in results:
        image = Path(result["image"])
        sub = folder / image.stem
        sub.mkdir()
        files = {}
        for role, source in result["files"].items():
            name = f"{image.stem}/{role}{Path(source).suffix}"
            shutil.copyfile(source, folder / name)
            files[role] = name
        entries[file_digest(image)] = dict(name=image.name, files=files, numbers=result["numbers"],
                                           seconds=round(result["seconds"], 1))
    manifest = dict(fingerprint=fingerprint_, model=model, settings=settings, made_with=made_with, machine=machine,
                    entries=entries)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return folder / MANIFEST
