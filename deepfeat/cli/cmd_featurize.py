"""``deepfeat featurize``: embed a folder, manifest or listing into the HDF5 cache."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.cli.options import add_backbone_options, add_runtime_options, featurizer_kwargs
from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize.featurizer import Featurizer
from deepfeat.featurize.inputs import scan_images

HELP = "embed images (folder, CSV/parquet manifest, .txt listing, or files) into an HDF5 cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="+", help="folder, manifest (.csv/.parquet), .txt listing, or image files")
    add_backbone_options(p, tta=True)
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


def format_text(r: dict[str, Any]) -> str:
    lines = [
        f"featurized {r['featurized']}, found in cache {r['cached']}, duplicates {r['deduplicated']}, "
        f"failed {r['failed']}, skipped non-image files {r['skipped']}  (of {r['total']} inputs)",
        f"{r['images_per_second']:.1f} images/s on {r['device']} {r['precision']}; "
        f"{r['seconds']:.1f} s in all; cache {r['cache']} space {r['fingerprint']}",
    ]
    for f in r["failures"][:20]:
        lines.append(f"  FAILED  {f['path']}: {f['reason']}")
    if len(r["failures"]) > 20:
        lines.append(f"  ... and {len(r['failures']) - 20} more (use --json for the full list)")
    for s in r["skipped_files"][:10]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    return "\n".join(lines)
