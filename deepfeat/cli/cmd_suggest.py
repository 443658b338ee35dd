"""``deepfeat suggest``: which items to label first (or next), ranked, with a contact sheet."""

from __future__ import annotations

import argparse
import os
from typing import Any

from deepfeat.cli.options import add_backbone_options, add_runtime_options, featurizer_kwargs
from deepfeat.cli.text_inputs import (
    add_text_options,
    check_model_reads,
    pick_backbone,
    read_labeled_texts,
)
from deepfeat.cli.validate import integer
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize.inputs import load_labeled, scan_images

HELP = (
    "rank unlabelled items to label first (typical and diverse) or next (uncertain, with "
    "--model or --labeled); write a CSV and an HTML contact sheet"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", metavar="POOL", help="unlabelled items: folder (recursive), .txt listing, or manifest; "
                   "texts: a CSV/TSV/parquet with a text column or a .txt file, one text per line")
    p.add_argument("--n", type=integer(1), default=50, help="items to pick (default: %(default)s)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--model", default=None, help="a model saved by `deepfeat fit`: pick what it is least sure of")
    who.add_argument("--labeled", default=None,
                     help="labelled items (folder of class subfolders or manifest): pick what a head on "
                          "them is least sure of, and list their labels that look wrong")
    p.add_argument("--out", default="picks.csv",
                   help="CSV to write (path, rank, action, reason); the contact sheet is written beside "
                        "it with the extension .html (default: %(default)s)")
    p.add_argument("--trust", action="store_true",
                   help="--model: load a .joblib model this machine did not save (unpickling can run code)")
    p.add_argument("--seed", type=int, default=0, help="seeds the projection and the clustering")
    p.add_argument("--label-col", "--label-column", dest="label_col", default="label",
                   help="--labeled: label column of a manifest or CSV of texts")
    add_text_options(p)
    add_backbone_options(p, texts=True)
    add_runtime_options(p)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from deepfeat.label.contact_sheet import write_contact_sheet
    from deepfeat.label.suggest import suggest

    if not args.out.lower().endswith(".csv"):
        raise InvalidParameterError(f"--out must name a .csv file, got {args.out!r}")
    if args.model is not None:
        kind = None  # the model says what it reads (checked once it is loaded)
    else:
        args.backbone, kind = pick_backbone(args.backbone, args.items, args.text_col)
    if kind is None:
        from deepfeat.cli.text_inputs import source_modality

        kind = source_modality(args.items, args.text_col)
    if kind == "text":
        from deepfeat.featurize.text_sources import read_texts

        ds = read_texts(args.items, text_col=args.text_col, label_col=None, labeled=False)
        pool, skipped = ds.texts, [{"path": f["row"], "reason": f["reason"]} for f in ds.failed]
    else:
        pool, skipped = scan_images(args.items)
    if not pool:
        raise InputError(f"{args.items}: no items found")
    model = labeled = featurizer = None
    if args.model is not None:
        from deepfeat.classify.persistence import load
        from deepfeat.cli.cmd_predict import runtime_cache

        model = load(args.model, trusted=args.trust)
        if not hasattr(model, "search_"):
            raise InputError(f"{args.model} holds a {type(model).__name__}, not a model saved by `deepfeat fit`")
        check_model_reads(model, args.items, args.text_col)
        model.set_params(verbose=0 if args.quiet else 1).set_embedder_params(
            cache=runtime_cache(args.cache, model.resolve_embedder().cache), device=args.device)
    else:
        from deepfeat.featurize.factory import make_featurizer

        kw = featurizer_kwargs(args)
        if kw.get("cache"):
            kw["cache"] = os.path.abspath(kw["cache"])
        featurizer = make_featurizer(**kw)
        if args.labeled is not None and kind == "text":
            tds = read_labeled_texts(args.labeled, args.text_col, args.label_col)
            labeled = (tds.texts, tds.labels)
        elif args.labeled is not None:
            lds = load_labeled(args.labeled, label_col=args.label_col)
            labeled = (lds.paths, lds.labels)
    s = suggest(pool, args.n, featurizer=featurizer, model=model, labeled=labeled, random_state=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sheet = write_contact_sheet(s.table, os.path.splitext(args.out)[0] + ".html")
    if kind == "text":  # the items are the texts themselves
        s.table = s.table.rename(columns={"path": "text"})
    s.table.to_csv(args.out, index=False)
    label = s.table[s.table.action == "label"]
    result = {
        "out": args.out,
        "contact_sheet": sheet,
        "strategy": s.strategy,
        "n_pool": s.n_pool,
        "n_picked": int(len(label)),
        "n_to_check": int((s.table.action == "check").sum()),
        "picks": s.table.to_dict(orient="records"),
        "featurize": s.summary,
        "failures": s.failures,
        "skipped": skipped,
    }
    return result, 0


def format_text(r: dict[str, Any]) -> str:
    how = ("typical and diverse items (no labels yet)" if r["strategy"] == "first"
           else "uncertain, diverse items")
    lines = [f"picked {r['n_picked']} of {r['n_pool']} pool items to label: {how}"]
    if r["n_to_check"]:
        lines.append(f"{r['n_to_check']} labelled item(s) whose label looks wrong, listed after the picks")
    for row in r["picks"][:10]:
        item = row["path"] if "path" in row else row["text"]
        lines.append(f"  {row['rank']:>3} {row['action']:<5} {item}: {row['reason']}")
    if len(r["picks"]) > 10:
        lines.append(f"  ... {len(r['picks']) - 10} more in {r['out']}")
    lines.append(f"wrote {r['out']} and the contact sheet {r['contact_sheet']}")
    for f in r["failures"][:10]:
        lines.append(f"  left out {f['path']}: {f['reason']}")
    return "\n".join(lines)
