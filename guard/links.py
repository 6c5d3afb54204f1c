"""Links that redo a result: a page's settings <-> a URL query string.

    query = encode(dict(method="vidfreeze", eps=8, steps=10, model="embedded", seed=3), example="chelsea.png")
    # "example=chelsea.png&method=vidfreeze&eps=8&steps=10&model=embedded&seed=3"
    link = decode(query, defaults, methods=..., models=..., examples=...)
    link.example, link.settings, link.problems   # "chelsea.png", every field of `defaults`, []

A link carries the settings of a result and, for an example photo, the example's file name; never a
visitor's own photo (the page says so). With the seed in the link, the same photo and the same settings
give the same result, byte for byte, on the same kind of machine. (Gradio's `DeepLinkButton` would carry
the photo, but it keeps the page's state in the server's upload folder, which a Space's restart empties:
its links die; these do not.)

`decode` never raises on what a link holds: a value out of bounds or not offered is left at the page's
default, with one sentence per such value in `Link.problems` naming the parameter and the value (the
bounds are `guard.limits`', as for every other input). Names the link does not know are ignored: the
Space's host adds its own (`__theme`, `logs`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from . import example_cache, limits
from .io import InputError

#: the query's parameters, in the order a link lists them (the API's parameter names)
FIELDS = ("method", "eps", "steps", "model", "seed", "frames", "video_steps", "motion_bucket", "robust")
#: a value in a link is echoed in a problem sentence up to this many characters
SHOWN_CHARS = 40
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


@dataclass
class Link:
    """What a link asks for: an example's file name (None: none), every setting (the page's defaults where
    the link has none or a refused one) and one sentence per refused value."""

    example: str | None = None
    settings: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # the settings the link gave (refused ones included)

    @property
    def given(self) -> bool:
        """Whether the link asks for anything (an example or a setting)."""
        return self.example is not None or bool(self.fields)


def encode(settings: Mapping, example: str | None = None) -> str:
    """The query string (no leading "?") of `settings` (a dict with keys of FIELDS; others, such as
    "randomize_seed", are left out) and an example's file name. Booleans are written 1 / 0."""
    pairs = [("example", example)] if example else []
    for name in FIELDS:
        if name in settings and settings[name] is not None:
            value = settings[name]
            pairs.append((name, int(value) if isinstance(value, bool) else value))
    return urlencode(pairs)


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "...")


def _boolean(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise InputError(f"{name} must be 1 or 0, got {_shown(value)}")


def _choice(name: str, value: str, choices: list[str]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {_shown(value)}")
    return value


def decode(query: str | Mapping[str, str], defaults: Mapping, *, methods: Iterable[str], models: Iterable[str],
           examples: Iterable[str] = ()) -> Link:
    """The settings a query asks for, over `defaults` (the page's controls: keys of FIELDS).

    query: "eps=8&seed=3" (a leading "?" is allowed) or a mapping such as Starlette's `request.query_params`
    (for a name given twice, the mapping's choice; in a string, the last one). methods, models, examples: the
    values offered (examples: file names, e.g. "chelsea.png"). A refused value keeps its default and adds a
    sentence to `Link.problems`; the returned settings always hold every key of `defaults`."""
    if isinstance(query, str):
        query = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    methods, models, examples = list(methods), list(models), list(examples)
    # each parameter's check: guard.limits' bounds, as for the page's controls and the API
    checks = {
        "method": lambda v: _choice("method", v, methods),
        "eps": limits.eps,
        "steps": limits.steps,
        "model": lambda v: _choice("model", v, models),
        "seed": limits.seed,
        "frames": lambda v: limits.frames(v) or 0,
        "video_steps": lambda v: limits.video_steps(v) or 0,
        "motion_bucket": limits.motion_bucket,
        "robust": lambda v: _boolean("robust", v),
    }
    link = Link(settings=dict(defaults))
    for name in FIELDS:
        if name not in query:
            continue
        link.fields.append(name)
        value = str(query[name])
        try:
            link.settings[name] = checks[name](value.strip())
        except InputError as e:
            message = str(e).replace(repr(value.strip()), _shown(value))
            default = defaults.get(name)
            link.problems.append(f"This link's {message}: the page's default ({default}) is used instead.")
    if "example" in query:
        name = str(query["example"])
        if name in examples:
            link.example = name
        else:
            link.problems.append(f"This link's example must be one of {', '.join(examples) or 'none'}, got "
                                 f"{_shown(name)}: no example is shown.")
    if "seed" in link.fields and "randomize_seed" in link.settings:
        link.settings["randomize_seed"] = False  # a link's seed is the seed
    return link


@functools.lru_cache(maxsize=4)
def _example_digests(examples: tuple[str, ...]) -> dict[str, str]:
    return {example_cache.file_digest(path): Path(path).name for path in examples}


def example_name(image: str | os.PathLike | None, examples: Iterable[str | os.PathLike]) -> str | None:
    """The file name of the example (a path of `examples`) that `image` is, matched by content (an upload of
    the same file counts); None for any other photo: a visitor's own photo is never named in a link."""
    if not image or not Path(image).is_file():
        return None
    return _example_digests(tuple(map(str, examples))).get(example_cache.file_digest(image))
