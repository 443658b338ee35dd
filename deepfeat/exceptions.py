"""Named errors raised by deepfeat.

Every error derives from :class:`DeepfeatError`, so ``except DeepfeatError`` catches
anything the library raises on purpose.
"""

from __future__ import annotations

__all__ = [
    "DeepfeatError",
    "InvalidParameterError",
    "UnknownBackboneError",
    "WeightsUnavailableError",
    "LayerNotFoundError",
    "ImageDecodeError",
    "InputError",
    "CacheError",
    "CacheLockedError",
    "CacheCorruptError",
    "NotFittedError",
    "UnsupportedPreprocessingError",
]


class DeepfeatError(Exception):
    """Base class of all deepfeat errors."""


class InvalidParameterError(DeepfeatError, ValueError):
    """A parameter (argument, option, setting) has a value outside what it allows.

    The message names the parameter, what is allowed and what was received. The command
    line reports it as a usage error (exit code 2), like a malformed option.
    """


class UnknownBackboneError(InvalidParameterError, KeyError):
    """A backbone name is not in the registry (the message suggests close matches)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(DeepfeatError, RuntimeError):
    """Pretrained weights could not be obtained (offline, missing file, bad checkpoint)."""


class LayerNotFoundError(InvalidParameterError):
    """A requested cut point does not exist in the backbone."""


class ImageDecodeError(DeepfeatError, ValueError):
    """One image could not be read or decoded.

    Parameters
    ----------
    path : str
        The file (or a description of the in-memory object) that failed.
    reason : str
        A short human-readable reason, e.g. ``"empty file (0 bytes)"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InputError(DeepfeatError, ValueError):
    """A dataset description (folder, manifest, list) is unusable as a whole."""


class CacheError(DeepfeatError, RuntimeError):
    """Base class for feature-cache problems."""


class CacheLockedError(CacheError):
    """Another process holds the cache's write lock."""


class CacheCorruptError(CacheError):
    """The cache file cannot be read or its attributes are invalid."""


class NotFittedError(DeepfeatError, ValueError, AttributeError):
    """Raised when a deepfeat object is used before it has been fitted."""


class UnsupportedPreprocessingError(DeepfeatError, ValueError):
    """A backbone's preprocessing asks for something deepfeat does not reproduce (e.g. timm's
    ``crop_mode="border"``): refused by name rather than approximated."""
