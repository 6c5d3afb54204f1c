"""Protection methods, one file each. Adding a method = one file + one line in `METHODS`."""

from __future__ import annotations

from .base import Method
from .freeze import Freeze
from .i2vguard import I2VGuard
from .medusa import Medusa
from .noise import Noise
from .photoguard import PhotoGuard
from .vidfreeze import VidFreeze

METHODS: dict[str, type[Method]] = {
    "freeze": Freeze,
    "vidfreeze": VidFreeze,
    "medusa": Medusa,
    "i2vguard": I2VGuard,
    "photoguard": PhotoGuard,
    "noise": Noise,
}


def get_method(name: str, **params) -> Method:
    """A method object by name, with its parameters (see each class for names and defaults)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    known = METHODS[name].__dataclass_fields__
    unknown = sorted(set(params) - set(known))
    if unknown:  # a ValueError naming the option, as for a bad value (the dataclass would raise TypeError)
        raise ValueError(f"unknown option {', '.join(map(repr, unknown))} for {name}: use one of "
                         f"{', '.join(known) or 'none'}")
    return METHODS[name](**params)


__all__ = ["METHODS", "Method", "get_method", "Freeze", "I2VGuard", "Medusa", "Noise", "PhotoGuard", "VidFreeze"]
