"""Numpy values as the plain Python values that JSON, messages and metadata hold."""

from __future__ import annotations

from typing import Any

__all__ = ["plain", "json_default"]


def plain(value: Any) -> Any:
    """A numpy (or torch) scalar as its Python value; anything else unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> plain(np.int64(3)), plain(np.str_("cat")), plain("cat")
    (3, 'cat', 'cat')
    """
    return value.item() if hasattr(value, "item") else value


def json_default(value: Any) -> Any:
    """``json.dump(..., default=json_default)``: numpy scalars as values, anything else as text.

    Examples
    --------
    >>> import json, pathlib, numpy as np
    >>> json.dumps({"n": np.int64(2), "p": np.float32(0.5), "dir": pathlib.PurePosixPath("a/b")},
    ...            default=json_default)
    '{"n": 2, "p": 0.5, "dir": "a/b"}'
    """
    return value.item() if hasattr(value, "item") else str(value)
