"""The two plug-in roles of the featurizing engine, as typing protocols.

A modality is a :class:`Reader` and an :class:`Encoder`; the engine
(:mod:`deepfeat.featurize.engine`) runs the rest. The image pair lives in
:mod:`~deepfeat.featurize.image_reader` / :mod:`~deepfeat.featurize.image_encoder`, the
text pair in :mod:`~deepfeat.featurize.text_reader` / :mod:`~deepfeat.featurize.text_encoder`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Encoder", "Reader", "Source"]


class Source(Protocol):
    """The items of one run that the cache lacks, ready to be read batch by batch."""

    #: Sizes the encoder may batch by (token lengths), or ``None``.
    sizes: Sequence[int] | None

    def __len__(self) -> int: ...

    def notes(self) -> dict[str, Any]:
        """Counts for the summary (texts: ``truncated``)."""

    def read(self, group: list[int]) -> tuple[Any, list[str]]:
        """The model input of the readable items of ``group`` (``None`` if none) and a reason
        per item (``""`` when it was read)."""

    def read_batches(self, groups: list[list[int]], workers: int, pin_memory: bool
                     ) -> Iterator[tuple[list[int], Any, list[str]]]:
        """:meth:`read` over ``groups``, in order, with ``workers`` reading processes if it can."""


class Reader(Protocol):
    """Keys, problems and model input of the items of one modality."""

    unit: str  #: progress-bar unit
    rate_key: str  #: summary key of the items encoded per second

    def check_sequence(self, inputs: Any) -> None:
        """Raise ``TypeError`` for a single item passed where a sequence is expected."""

    def keys(self, inputs: Sequence[Any]) -> tuple[list[str | None], dict[int, str]]:
        """The cache key of each input (``None`` where it fails) and the reasons of those."""

    def describe(self, item: Any, index: int) -> str:
        """A short name of an input for failure messages."""

    def open(self, items: list[Any]) -> Source: ...

    def ray_items(self, items: list[Any]) -> list[str]:
        """What the Ray actors receive for ``items`` (file paths, texts)."""

    def base_notes(self) -> dict[str, Any]:
        """The summary's reader fields before anything is read."""

    def log_notes(self, notes: dict[str, Any]) -> None:
        """Log what the summary's reader fields warn of."""


class Encoder(Protocol):
    """A network at a cut point, with the identity of the feature space it computes."""

    runtime: Any  #: :class:`~deepfeat.featurize.runtime.Runtime`
    fingerprint: str
    built: bool

    def space_in(self, cache: Any) -> str:
        """The name ``cache`` holds this space under (the fingerprint, or an older name)."""

    def space_attrs(self) -> dict[str, Any]:
        """What the cache records about a space this encoder creates."""

    def plan(self, n: int, batch_size: int, sizes: Sequence[int] | None = None) -> list[list[int]]:
        """The batches (lists of positions) in which to encode ``n`` items."""

    def encode(self, payload: Any) -> Any:
        """Float32 embeddings, on the CPU, of a read batch."""

    def ready(self) -> bool:
        """Whether :meth:`network` would build nothing."""

    def network(self) -> Any:
        """Build the network (once) and return it."""

    def expect(self, n: int | None) -> None:
        """Get ready for a job of ``n`` items (the image encoder traces large CPU jobs)."""

    def probe_dim(self) -> int:
        """The embedding width, from one forward pass."""
