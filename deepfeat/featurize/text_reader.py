"""The text reader: a string -> key and problems, and token ids within the encoder's window.

The key of a text is the hash of its exact UTF-8 bytes. A text that is no string, empty,
whitespace-only or holds undecodable bytes (as :mod:`~deepfeat.featurize.text_sources`
marks them) is a failure of that row; the run carries on. Reading tokenizes the texts the
cache lacks with the encoder's tokenizer, cut to its window: a text longer than the window
is truncated and counted (``summary["truncated"]``), never silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfeat.featurize.hashing import hash_bytes

__all__ = ["TextReader", "TokenBatch", "describe_text", "text_key", "text_problem"]

log = logging.getLogger(__name__)

#: The one encoding texts are read with (named in every decoding failure).
ENCODING = "utf-8"
#: An undecodable byte b is read as the private-use character U+10FF00 + b (bytes 0x80-0xFF).
_BAD_BYTES = ("\U0010ff80", "\U0010ffff")


def text_key(text: str) -> str:
    """The cache key of a text: a hash of its exact UTF-8 bytes.

    Examples
    --------
    >>> text_key("good") == text_key("good"), text_key("good") == text_key("good ")
    (True, False)
    """
    return hash_bytes(text.encode("utf-8", "surrogatepass"))


def text_problem(item: Any) -> str:
    """Why ``item`` cannot be encoded as a text, or ``""`` when it can.

    Examples
    --------
    >>> text_problem("fine"), text_problem(" "), text_problem(3)
    ('', 'whitespace-only text', 'not a text (got int)')
    """
    if not isinstance(item, str):
        return f"not a text (got {type(item).__name__})"
    if not item.strip():
        return "empty text" if not item else "whitespace-only text"
    lo, hi = _BAD_BYTES
    bad = next((c for c in item if lo <= c <= hi), None)
    if bad is not None:
        return f"undecodable bytes (byte 0x{ord(bad) - 0x10FF00:02x} is not valid {ENCODING})"
    return ""


def describe_text(text: Any, width: int = 60) -> str:
    """A short quote of a text for messages."""
    s = text if isinstance(text, str) else f"<{type(text).__name__}>"
    s = " ".join(s.split())
    return repr(s if len(s) <= width else s[: width - 1] + "…")


@dataclass
class TokenBatch:
    """Token ids of a batch of texts (unpadded) and the id to pad them with."""

    ids: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)


class TextSource:
    """The texts of one run, tokenized once: lengths for bucketing, ids per batch."""

    def __init__(self, ids: list[list[int]], truncated: np.ndarray, pad_id: int) -> None:
        self.ids = ids
        self.truncated = truncated
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sizes(self) -> list[int]:
        return [len(r) for r in self.ids]

    def notes(self) -> dict[str, Any]:
        return {"truncated": int(self.truncated.sum())}

    def read(self, group: list[int]) -> tuple[TokenBatch, list[str]]:
        return TokenBatch([self.ids[i] for i in group], self.pad_id), [""] * len(group)

    def read_batches(self, groups: list[list[int]], workers: int, pin_memory: bool
                     ) -> Iterator[tuple[list[int], TokenBatch, list[str]]]:
        """In this process: the texts are tokenized already (``workers`` is for images)."""
        for g in groups:
            yield (g, *self.read(g))


class TextReader:
    """Keys and token ids of texts for the featurizing engine.

    Parameters
    ----------
    preprocess : TextPreprocess
        The encoder's tokenizer (loaded on first use).
    max_length : int
        The window in tokens.
    """

    unit = "text"
    rate_key = "texts_per_second"

    def __init__(self, preprocess: Any, max_length: int) -> None:
        self.preprocess = preprocess
        self.max_length = max_length
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self.preprocess.load_tokenizer()
        return self._tokenizer

    def check_sequence(self, inputs: Any) -> None:
        if isinstance(inputs, str):
            raise TypeError("featurize() takes a sequence of texts; wrap a single text in a list")

    def keys(self, inputs: Sequence[Any]) -> tuple[list[str | None], dict[int, str]]:
        """The key of each text (``None`` for a bad one) and the reasons of the bad ones."""
        reasons = [text_problem(t) for t in inputs]
        keys = [None if why else text_key(t) for t, why in zip(inputs, reasons)]
        return keys, {i: why for i, why in enumerate(reasons) if why}

    def describe(self, item: Any, index: int) -> str:
        return f"row {index}: {describe_text(item)}"

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids of each text within the window, and which texts were truncated."""
        if not texts:  # the tokenizer fails on an empty batch
            return [], np.zeros(0, bool)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             return_overflowing_tokens=True, stride=0, padding=False)
        ids: list[list[int] | None] = [None] * len(texts)
        truncated = np.zeros(len(texts), bool)
        for row, i in zip(enc["input_ids"], enc["overflow_to_sample_mapping"]):
            if ids[i] is None:
                ids[i] = row
            else:
                truncated[i] = True
        return [r or [] for r in ids], truncated

    def open(self, items: list[str]) -> TextSource:
        ids, truncated = self.tokenize(items)
        return TextSource(ids, truncated, self.tokenizer.pad_token_id or 0)

    def ray_items(self, items: list[str]) -> list[str]:
        return list(items)  # the actors tokenize the texts themselves

    def base_notes(self) -> dict[str, Any]:
        return {"truncated": 0, "max_length": self.max_length}

    def log_notes(self, notes: dict[str, Any]) -> None:
        if notes.get("truncated"):
            log.warning("%d text(s) longer than the window of %d tokens were truncated",
                        notes["truncated"], self.max_length)
