"""``deepfeat export``: a saved model as one ONNX graph (image crops -> class probabilities)."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.cli.validate import integer
from deepfeat.exceptions import InputError

HELP = "export a model saved by `deepfeat fit` as an ONNX file (uint8 image crops in, probabilities out)"

FORMATS = ("onnx",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.joblib or .skops) written by `deepfeat fit`")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    p.add_argument("--opset", type=integer(1), default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument("--trust", action="store_true",
                   help="load a .joblib model this machine did not save (unpickling can run code)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the file with onnxruntime against torch")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    try:
        from deepfeat.export import export_onnx
    except ImportError as exc:
        raise InputError(f"deepfeat export needs onnx ({exc.name} is missing): pip install 'deepfeat[onnx]'") from None
    from deepfeat.classify.persistence import load

    model, info = load(args.model, trusted=args.trust, return_info=True)
    result = export_onnx(model, args.out, info=info, opset=args.opset, check=not args.no_check)
    result["model"] = args.model
    return result, 0


def format_text(r: dict[str, Any]) -> str:
    shape = "x".join(str(s) for s in r["input"]["shape"])
    check = (f"; onnxruntime vs torch max |dp| = {r['onnx_max_abs_diff']:.1e}"
             if "onnx_max_abs_diff" in r else "")
    return (f"wrote {r['out']} ({r['bytes'] / 2**20:.1f} MiB): {r['input']['dtype']} {shape} -> "
            f"probabilities of {len(r['classes'])} classes{check}")
