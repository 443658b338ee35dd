"""``deepfeat serve``: a web page and a prediction API for a saved model or an ONNX file.

Imports neither torch nor the library's torch parts at module level, so that
``python -m deepfeat.serve MODEL.onnx --runtime onnx`` runs without torch.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from typing import Any

from deepfeat.cli.validate import device, field, integer
from deepfeat.exceptions import InputError
from deepfeat.serve.limits import ServeLimits

HELP = "serve a model: a web page to drop images on, POST /predict, /health, /model, /docs"

log = logging.getLogger(__name__)

API_KEY_ENV = "DEEPFEAT_API_KEY"
_DEFAULTS = ServeLimits()


def _mib(mb: float) -> int:
    return int(mb * 2**20)


def _device(value: str) -> str:
    """A device this machine has; ``cpu`` is checked without importing torch (``--runtime onnx``)."""
    return value if value == "cpu" else device(value)


def _limit(name: str, convert: type, to_field: Any = None) -> Any:
    """An argparse type for the ``ServeLimits`` field ``name``, checked by ServeLimits itself."""
    return field(ServeLimits, name, convert, to_field)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file from `deepfeat fit` (.joblib/.skops) or, with --runtime onnx, a .onnx file from `deepfeat export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=integer(0, 65535), default=8000, help="0: any free port")
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require this key (X-API-Key header) on /predict and /model; default: ${API_KEY_ENV} if set",
    )
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="torch: the saved model; onnx: an exported .onnx file, run with onnxruntime (no torch)")
    p.add_argument("--trust", action="store_true",
                   help="load a .joblib model this machine did not save (unpickling can run code)")
    p.add_argument("--device", default="cpu", type=_device, help="torch device (default cpu)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-files", type=_limit("max_files", int), default=_DEFAULTS.max_files, help="images per request")
    g.add_argument("--max-upload-mb", type=_limit("max_upload_bytes", float, _mib), default=_DEFAULTS.max_upload_bytes / 2**20,
                   help="request body size in MiB")
    g.add_argument("--max-pixels", type=_limit("max_pixels", int), default=_DEFAULTS.max_pixels, help="pixels per image")
    g.add_argument("--max-batch", type=_limit("max_batch", int), default=_DEFAULTS.max_batch, help="images per forward pass")
    g.add_argument("--batch-wait-ms", type=_limit("batch_wait_ms", float), default=_DEFAULTS.batch_wait_ms,
                   help="wait for more images to join a batch")
    g.add_argument("--max-queue", type=_limit("max_queue", int), default=_DEFAULTS.max_queue,
                   help="images held at once; beyond it requests get 503 + Retry-After")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def limits_from_args(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(
        max_upload_bytes=_mib(args.max_upload_mb),
        max_files=args.max_files,
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_queue=args.max_queue,
    )


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from deepfeat.serve import create_app, load_predictor

    try:
        import uvicorn
    except ImportError:
        raise InputError("deepfeat serve needs uvicorn: pip install 'deepfeat[serve]'") from None
    limits = limits_from_args(args)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if not _is_loopback(args.host) and api_key is None:
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use the "
            "model (set --api-key or $%s)", args.host, API_KEY_ENV,
        )
    predictor = load_predictor(args.model, runtime=args.runtime, trusted=args.trust, device=args.device)
    predictor.warm_up()
    app = create_app(predictor, limits=limits, api_key=api_key)
    log.info("serving %s (%s) on http://%s:%d/  (API docs: /docs)", args.model, args.runtime, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    b = app.state.batcher
    return {"model": args.model, "runtime": args.runtime, "host": args.host, "port": args.port,
            "images": b.images, "batches": b.batches}, 0


def format_text(r: dict[str, Any]) -> str:
    return f"served {r['images']} images in {r['batches']} batches; stopped"
