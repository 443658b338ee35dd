"""``deepfeat featurize``: embed a folder, manifest or listing into the HDF5 cache."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.cli.options import add_backbone_options, add_runtime_options, featurizer_kwargs
from deepfeat.cli.text_inputs import add_text_options, pick_backbone, source_modality
from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize.factory import make_featurizer
from deepfeat.featurize.featurizer import Featurizer
from deepfeat.featurize.inputs import scan_images
from deepfeat.featurize.text_sources import read_texts

HELP = "embed images (folder, CSV/parquet manifest, .txt listing, or files) into an HDF5 cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="+", help="folder, manifest (.csv/.parquet), .txt listing, or image files; "
                   "texts: a CSV/parquet with a text column, a .txt file (one text per line), class folders "
                   "of .txt files")
    add_text_options(p)
    add_backbone_options(p, tta=True, texts=True)
    add_runtime_options(p)
    p.add_argument("--strict", action="store_true", help="exit non-zero if any input failed")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process) or ray (Ray Data actors; pip install 'deepfeat[ray]')")
    p.add_argument("--address", default=None,
                   help="--engine ray: the cluster to join (e.g. HEAD:6379); default: a local Ray, 2 CPUs")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    if not args.cache:
        raise InvalidParameterError("featurize needs --cache FILE.h5 (where the embeddings are kept)")
    if args.address and args.engine != "ray":
        raise InvalidParameterError("--address is for --engine ray (got --engine local)")
    kinds = {source_modality(src, args.text_col) for src in args.src}
    if len(kinds) > 1:
        raise InvalidParameterError("give sources of one kind: texts or images, not both")
    args.backbone, kind = pick_backbone(args.backbone, args.src[0], args.text_col)
    if kind == "text":
        return _texts(args)
    paths: list[str] = []
    skipped: list[dict[str, str]] = []
    for src in args.src:
        p, s = scan_images(src)
        paths += p
        skipped += s
    feat = Featurizer(**featurizer_kwargs(args), engine=args.engine, ray_address=args.address)
    res = feat.featurize(paths, return_features=False)
    out = dict(res.summary)
    out["backbone"] = feat.backbone
    out["layer"] = feat.spec["layer"]
    out["engine"] = args.engine
    out["skipped"] = len(skipped)
    out["skipped_files"] = skipped
    out["failures"] = [{"path": f["path"], "reason": f["reason"]} for f in res.failures]
    code = 1 if args.strict and res.failures else 0
    return out, code


def _texts(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Texts into the cache, on this machine or on Ray (``--engine ray``)."""
    if args.tta != "none":
        raise InvalidParameterError("--tta is for images; a text encoder has no test-time augmentation")
    texts, rows, skipped = [], [], []
    for src in args.src:
        ds = read_texts(src, text_col=args.text_col, labeled=False)
        texts += ds.texts
        rows += [f"{src}: {r}" for r in ds.rows]
        skipped += [{"path": f"{src}: {f['row']}", "reason": f["reason"]} for f in ds.failed]
    feat = make_featurizer(**featurizer_kwargs(args), engine=args.engine, ray_address=args.address)
    res = feat.featurize(texts, return_features=False, log_failures=False)
    out = {**res.summary, "backbone": feat.backbone, "layer": feat.spec["layer"], "engine": args.engine,
           "modality": "text", "skipped": len(skipped), "skipped_files": skipped,
           "failures": [{"path": rows[f["index"]], "reason": f["reason"]} for f in res.failures]}
    return out, 1 if args.strict and (res.failures or skipped) else 0


def format_text(r: dict[str, Any]) -> str:
    unit = "texts" if r.get("modality") == "text" else "images"
    extra = f", truncated to the window {r['truncated']}" if r.get("truncated") else ""
    lines = [
        f"featurized {r['featurized']}, found in cache {r['cached']}, duplicates {r['deduplicated']}, "
        f"failed {r['failed']}, skipped {'rows' if unit == 'texts' else 'non-image files'} {r['skipped']}"
        f"{extra}  (of {r['total']} inputs)",
        f"{r['images_per_second']:.1f} {unit}/s on {r['device']} {r['precision']}; "
        f"{r['seconds']:.1f} s in all; cache {r['cache']} space {r['fingerprint']}",
    ]
    for f in r["failures"][:20]:
        lines.append(f"  FAILED  {f['path']}: {f['reason']}")
    if len(r["failures"]) > 20:
        lines.append(f"  ... and {len(r['failures']) - 20} more (use --json for the full list)")
    for s in r["skipped_files"][:10]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    return "\n".join(lines)
