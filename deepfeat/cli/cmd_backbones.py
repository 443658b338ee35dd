"""``deepfeat backbones``: list backbones, or one backbone's cut points."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize.backbones import list_backbones, resolve_backbone
from deepfeat.featurize.truncate import list_layers

HELP = "list backbones (offline-usable marked), or NAME --layers for its cut points and sizes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, help="a backbone name or a pattern like 'timm:resnet*'")
    p.add_argument("--layers", action="store_true", help="list the cut points of NAME with output sizes")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    if args.layers:
        if not args.name:
            raise InvalidParameterError("--layers needs a backbone NAME, e.g. timm:resnet18")
        # The graph does not depend on the weights: list it with random ones (works offline).
        rb = resolve_backbone(args.name, weights=None)
        model = rb.build()
        rows = list_layers(model, rb.family, rb.preprocess.crop)
        return {"backbone": args.name, "input_size": list(rb.preprocess.crop), "layers": rows}, 0
    rows = list_backbones(args.name or "*")
    return {"backbones": rows, "count": len(rows)}, 0


def format_text(r: dict[str, Any]) -> str:
    if "layers" in r:
        out = [f"{r['backbone']} cut points (input {r['input_size'][0]}x{r['input_size'][1]}):",
               f"  {'layer':40s} {'output shape':>18s} {'embedding dim':>14s}",
               f"  {'penultimate (default)':40s} {'':>18s} {'':>14s}"]
        for row in r["layers"]:
            out.append(f"  {row['layer']:40s} {'x'.join(map(str, row['shape'])):>18s} {row['dim']:>14d}")
        return "\n".join(out)
    out = [f"{'name':45s} offline  description"]
    for b in r["backbones"]:
        mark = "yes" if b["offline"] else "no "
        out.append(f"{b['name']:45s} {mark:7s}  {b['description']}")
    out.append(f"{r['count']} backbones; 'offline: yes' = pretrained weights usable without internet")
    return "\n".join(out)
