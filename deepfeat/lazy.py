"""Package names imported on first use (PEP 562), so that importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: dict[str, Any], exports: dict[str, str], before: Callable[[str, str], None] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    Parameters
    ----------
    package : dict
        The package's ``globals()``; a name, once loaded, is stored there.
    exports : dict
        Public name -> the module that defines it.
    before : callable, optional
        Called with ``(name, module)`` before the module is imported (e.g. to check that
        an optional dependency is installed).

    Examples
    --------
    >>> space: dict = {"__name__": "pkg"}
    >>> getattr_, dir_ = lazy_exports(space, {"sqrt": "math"})
    >>> getattr_("sqrt")(4.0), "sqrt" in space, dir_()
    (2.0, True, ['__name__', 'sqrt'])
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")
        if before is not None:
            before(name, module)
        value = getattr(importlib.import_module(module), name)
        package[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package) | set(exports))

    return __getattr__, __dir__
