"""``deepfeat predict``: label images with a saved model, one CSV row per input."""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from deepfeat.classify.persistence import load
from deepfeat.classify.transfer import TransferClassifier
from deepfeat.cli.options import add_runtime_options, featurizer_kwargs
from deepfeat.cli.text_inputs import add_text_options, check_model_reads
from deepfeat.exceptions import InputError
from deepfeat.featurize.inputs import scan_images
from deepfeat.featurize.text_sources import read_texts

HELP = "predict labels and class probabilities for images with a model saved by `deepfeat fit`"

log = logging.getLogger(__name__)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared with ``deepfeat evaluate``: trust and runtime overrides."""
    p.add_argument(
        "--trust",
        action="store_true",
        help="load a .joblib model this machine did not save (unpickling can run code)",
    )
    add_runtime_options(p, from_model=True, cache_help="HDF5 embedding cache to use")


def runtime_cache(given: str | None, stored: str | os.PathLike | None) -> str | None:
    """The cache a call uses: ``--cache`` if given, else the model's own if it is still there.

    A cache named on this call is resolved against the current folder (and created if
    missing: the user asked for it). The model's stored cache is used only when it is an
    absolute path that exists: a relative one (saved by an older version) would be read
    against whatever folder the call runs from, and a missing one would be created there.
    Otherwise (``None``) the call uses a temporary cache.
    """
    if given is not None:
        return os.path.abspath(given)
    if stored is None:
        return None
    stored = os.fspath(stored)
    if os.path.isabs(stored) and os.path.exists(stored):
        return stored
    log.info(
        "the model's cache %s is %s; using a temporary cache (--cache to choose one)",
        stored,
        "a relative path" if not os.path.isabs(stored) else "not on this machine",
    )
    return None


def load_image_model(args: argparse.Namespace) -> TransferClassifier:
    """Load ``args.model`` and apply the runtime overrides given on the command line."""
    model = load(args.model, trusted=args.trust)
    if not isinstance(model, TransferClassifier):
        raise InputError(
            f"{args.model} holds a {type(model).__name__}, not an image classifier; "
            f"predicting on images needs a model saved by `deepfeat fit`"
        )
    over = {k: v for k, v in featurizer_kwargs(args).items()
            if v is not None and k not in ("cache", "progress")}
    over["cache"] = runtime_cache(args.cache, model.resolve_embedder().cache)
    return model.set_params(verbose=0 if args.quiet else 1).set_embedder_params(**over)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.joblib or .skops) written by `deepfeat fit`")
    p.add_argument("src", help="image folder (recursive), image file, .txt listing, or manifest; for a "
                   "text model: a .txt file (one text per line) or a CSV/parquet with a text column")
    p.add_argument(
        "--out", required=True,
        help="CSV to write: path (texts: row, text), label, proba_<class>..., status",
    )
    add_text_options(p)
    p.add_argument(
        "--strict", action="store_true", help="exit non-zero if any input could not be labelled"
    )
    add_model_options(p)


def predict_texts(model: TransferClassifier, src: str, text_col: str) -> tuple[Any, int, float]:
    """The prediction table of a source of texts (``row`` and ``text`` first; rows that could
    not be read as ``skipped: reason``), how many texts were embedded, and the seconds it took."""
    import pandas as pd

    ds = read_texts(src, text_col=text_col, label_col=None, labeled=False)
    t0 = time.perf_counter()
    table = model.predict_table(ds.texts)
    seconds = time.perf_counter() - t0
    table.insert(0, "row", ds.rows)
    if ds.failed:
        bad = pd.DataFrame({"row": [f["row"] for f in ds.failed],
                            "status": [f"skipped: {f['reason']}" for f in ds.failed]})
        table = pd.concat([table, bad], ignore_index=True)
    return table, len(ds.texts), seconds


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    model = load_image_model(args)
    if check_model_reads(model, args.src, args.text_col) == "text":
        table, n, seconds = predict_texts(model, args.src, args.text_col)
        cols = ["row", "text", "label"] + [c for c in table.columns if c.startswith("proba_")] + ["status"]
        return _written(args, model, table.reindex(columns=cols), n, seconds, key="row", unit="texts")
    paths, skipped = scan_images(args.src)
    if not paths and not skipped:
        raise InputError(f"{args.src}: no images found")
    import pandas as pd

    t0 = time.perf_counter()
    parts = [model.predict_table(paths)] if paths else []
    seconds = time.perf_counter() - t0
    if skipped:
        parts.append(
            pd.DataFrame(
                {
                    "path": [s["path"] for s in skipped],
                    "status": [f"skipped: {s['reason']}" for s in skipped],
                }
            )
        )
    table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    cols = ["path", "label"] + [c for c in table.columns if c.startswith("proba_")] + ["status"]
    return _written(args, model, table.reindex(columns=cols), len(paths), seconds, key="path")


def _written(args: argparse.Namespace, model: TransferClassifier, table: Any, n: int, seconds: float,
             key: str, unit: str = "images") -> tuple[dict[str, Any], int]:
    """Write ``table`` to ``--out`` and summarise it (``key``: the column naming an input)."""
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    table.to_csv(args.out, index=False)
    bad = table[table["status"] != "ok"]
    ok = table[table["status"] == "ok"]
    result = {
        "model": args.model,
        "out": args.out,
        "n_inputs": len(table),
        "n_ok": len(ok),
        "n_failed": len(bad),
        "label_counts": {
            str(k): int(v) for k, v in ok["label"].value_counts().sort_index().items()
        },
        "failures": [{"path": p, "reason": s} for p, s in zip(bad[key], bad["status"])],
        "throughput": {**_throughput(model, n, seconds), "unit": unit},
    }
    return result, 1 if args.strict and len(bad) else 0


def _throughput(model: TransferClassifier, n: int, seconds: float) -> dict[str, Any]:
    """Images per second of this run (decoding and images read from the cache included),
    beside the model's cost per image from fit (models saved before it have none)."""
    cost = getattr(model, "cost_", None) or {}
    return {
        "images": n,
        "seconds": round(seconds, 3),
        "images_per_second": round(n / seconds, 2) if seconds > 0 and n else None,
        "forward_passes_per_image": cost.get("forward_passes"),
        "fit_ms_per_image": cost.get("ms_per_image"),
    }


#: Label counts named in the one-line text summary (all of them are in --json).
MAX_COUNTS_SHOWN = 10


def format_text(r: dict[str, Any]) -> str:
    counts = r["label_counts"]
    shown = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_COUNTS_SHOWN]
    text = ", ".join(f"{k}: {v}" for k, v in shown)
    if len(counts) > MAX_COUNTS_SHOWN:  # the full counts are in --json and the CSV
        text = f"{len(counts)} classes; most frequent {text}, ..."
    lines = [f"labelled {r['n_ok']} of {r['n_inputs']} inputs ({text}); wrote {r['out']}"]
    t = r.get("throughput") or {}
    if t.get("images_per_second"):
        passes = t.get("forward_passes_per_image")
        unit = t.get("unit", "images")
        lines.append(f"throughput {t['images_per_second']:.1f} {unit}/s ({t['images']} {unit} in "
                     f"{t['seconds']:.1f} s, cached embeddings included"
                     + (f"; the model runs {passes} forward pass(es) per {unit[:-1]})" if passes else ")"))
    for f in r["failures"][:20]:
        lines.append(f"  FAILED  {f['path']}: {f['reason']}")
    if len(r["failures"]) > 20:
        lines.append(f"  ... and {len(r['failures']) - 20} more (see the status column)")
    return "\n".join(lines)
