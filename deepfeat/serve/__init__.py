"""Serve: a saved model or an exported ONNX file behind a web page and an HTTP API.

:func:`load_predictor` loads what is served (torch or onnxruntime), :func:`create_app`
builds the FastAPI application, :class:`ServeLimits` holds its limits. Needs the ``serve``
extra: ``pip install 'deepfeat[serve]'``. Only the CLI (``deepfeat serve``) imports this package.
"""

from deepfeat.serve.limits import ServeLimits
from deepfeat.serve.predictors import RUNTIMES, load_predictor


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see deepfeat.serve.app.create_app
    """Build the FastAPI application; see :func:`deepfeat.serve.app.create_app`."""
    try:
        from deepfeat.serve.app import create_app as _create_app
    except ImportError as exc:
        from deepfeat.exceptions import InputError

        raise InputError(
            f"deepfeat serve needs FastAPI and uvicorn ({exc.name} is missing): "
            f"pip install 'deepfeat[serve]'"
        ) from None
    return _create_app(*args, **kwargs)


__all__ = ["RUNTIMES", "ServeLimits", "create_app", "load_predictor"]
