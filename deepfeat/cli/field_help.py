"""Help texts for options generated from a dataclass: its numpydoc ``Parameters`` entries."""

from __future__ import annotations

import re

__all__ = ["field_help"]


def field_help(cls: type) -> dict[str, str]:
    r"""The first sentence of each parameter's description in ``cls``'s numpydoc docstring.

    Examples
    --------
    >>> class Demo:
    ...     '''Parameters
    ...     ----------
    ...     size : int
    ...         Images per batch. Larger is faster.
    ...     '''
    >>> field_help(Demo)
    {'size': 'Images per batch'}
    """
    doc = cls.__doc__ or ""
    helps: dict[str, str] = {}
    for m in re.finditer(r"^    (\w+) : [^\n]*\n((?:        [^\n]*\n)+)", doc, re.M):
        text = " ".join(m.group(2).split()).replace("``", "")
        first = re.split(r"(?<=[^.]\.)\s+(?=[A-Z])", text, maxsplit=1)[0]
        helps[m.group(1)] = first.rstrip(".").replace("%", "%%")
    return helps
