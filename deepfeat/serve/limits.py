"""The limits a prediction server enforces, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from deepfeat.exceptions import InvalidParameterError

__all__ = ["ServeLimits"]


@dataclass(frozen=True)
class ServeLimits:
    """What one request may send and how much work the server holds at once.

    Parameters
    ----------
    max_upload_bytes : int, default=20 MiB
        Largest request body; a larger one is answered 413 before it is read in full.
    max_files : int, default=16
        Most images in one request (413 beyond).
    max_pixels : int, default=40_000_000
        Most pixels one image may have (its header is checked before the pixels are
        allocated); a larger image gets status 413 of its own.
    max_batch : int, default=16
        Most images sent through the network together.
    batch_wait_ms : float, default=10
        How long the batch worker waits after the first image for others to join it.
    max_queue : int, default=64
        Most images admitted and not yet answered; a request that would exceed it is
        answered 503 with ``Retry-After``.

    Examples
    --------
    >>> ServeLimits(max_files=4).max_files
    4
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_files: int = 16
    max_pixels: int = 40_000_000
    max_batch: int = 16
    batch_wait_ms: float = 10.0
    max_queue: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidParameterError(
                    f"ServeLimits.{name} must be a non-negative number, got {value!r}"
                )
            if name != "batch_wait_ms" and (not isinstance(value, int) or value < 1):
                raise InvalidParameterError(
                    f"ServeLimits.{name} must be a positive integer, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
