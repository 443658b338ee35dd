"""``deepfeat fit``: train an image classifier (cached embeddings + searched head) and save it."""

from __future__ import annotations

import argparse
import inspect
import time
from typing import Any

from deepfeat.classify.candidates import (
    HEADS,
    PREPROCESSING_STEPS,
    check_heads,
    check_preprocessing,
)
from deepfeat.classify.cv import class_counts
from deepfeat.classify.persistence import save
from deepfeat.classify.transfer import TransferClassifier
from deepfeat.cli.finetune_options import add_finetune_arguments, finetune_kwargs
from deepfeat.cli.options import add_backbone_options
from deepfeat.cli.validate import checked, device, integer, scorer, workers
from deepfeat.featurize.inputs import load_labeled
from deepfeat.featurize.runtime import PRECISIONS

HELP = (
    "train a classifier on labelled images: embed what the cache lacks, search the head by CV, save"
)

_DEFAULTS = {k: p.default for k, p in inspect.signature(TransferClassifier).parameters.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of class subfolders, or a CSV/parquet manifest (path,label)")
    p.add_argument(
        "--out", required=True, help="model file to write: .joblib, or .skops to share safely"
    )
    p.add_argument("--path-col", default="path", help="path column of a manifest")
    p.add_argument("--label-col", default="label", help="label column of a manifest")
    add_backbone_options(p)
    g = p.add_argument_group("featurization")
    g.add_argument("--cache", default=None, help="HDF5 embedding cache (default: a temporary one)")
    g.add_argument(
        "--device", default=_DEFAULTS["device"], type=device, help="auto, cpu, cuda, mps"
    )
    g.add_argument("--precision", default=_DEFAULTS["precision"], choices=PRECISIONS)
    g.add_argument("--batch-size", type=integer(1), default=_DEFAULTS["batch_size"])
    g.add_argument(
        "--workers", type=workers, default=_DEFAULTS["num_workers"], help="decoding processes"
    )
    s = p.add_argument_group("search")
    s.add_argument(
        "--heads",
        type=checked(check_heads),
        default=",".join(_DEFAULTS["heads"]),
        help=f"comma-separated, among {','.join(HEADS)}",
    )
    s.add_argument(
        "--preprocessing",
        type=checked(check_preprocessing),
        default=",".join(_DEFAULTS["preprocessing"]),
        help=f"comma-separated choices; steps {','.join(PREPROCESSING_STEPS)}, chained with '+'",
    )
    s.add_argument(
        "--cv",
        type=integer(2),
        default=5,
        help="folds wanted (fewer when a class is small; repeated when tiny)",
    )
    s.add_argument(
        "--scoring", default=_DEFAULTS["scoring"], type=scorer, help="e.g. accuracy, balanced_accuracy, f1_macro"
    )
    s.add_argument(
        "--class-weight", default=None, choices=("balanced",), help="reweight classes by 1/size"
    )
    s.add_argument(
        "--n-jobs", type=integer(nonzero=True), default=None, help="CV folds scored in parallel"
    )
    s.add_argument("--seed", type=int, default=_DEFAULTS["random_state"])
    add_finetune_arguments(p)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    ds = load_labeled(args.src, path_col=args.path_col, label_col=args.label_col)
    model = TransferClassifier(
        backbone=args.backbone,
        layer=args.layer,
        pool=args.pool,
        weights=args.weights,
        checkpoint=args.checkpoint,
        cache=args.cache,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        num_workers=args.workers,
        heads=args.heads,
        preprocessing=args.preprocessing,
        cv=args.cv,
        scoring=args.scoring,
        class_weight=args.class_weight,
        n_jobs=args.n_jobs,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    t0 = time.perf_counter()
    tuned = None
    if args.finetune:
        from deepfeat.finetune import FineTuneClassifier

        tuned = FineTuneClassifier(model, **finetune_kwargs(args)).fit(ds.paths, ds.labels)
        model = tuned.transfer_  # an ordinary model on the fine-tuned checkpoint
    else:
        model.fit(ds.paths, ds.labels)
    fit_seconds = time.perf_counter() - t0
    out = save(model, args.out)
    result = {
        "model": out,
        "source": args.src,
        "n_images": len(ds.paths),
        "classes": class_counts(ds.labels),
        "best_pipeline": model.describe(),
        "best_params": model.best_params_,
        "cv_score": model.best_score_,
        "cv_std": model.best_std_,
        "scoring": args.scoring,
        "n_splits": model.n_splits_,
        "n_candidates": len(model.cv_results_["params"]),
        "featurize": model.featurize_summary_,
        "search_seconds": round(model.search_.search_time_, 3),
        "fit_seconds": round(fit_seconds, 3),
        "failures": [{"path": f["path"], "reason": f["reason"]} for f in model.failures_],
        "skipped": ds.skipped,
    }
    if tuned is not None:
        result["finetune"] = {**tuned.train_summary_, "checkpoint": tuned.checkpoint_, "history": tuned.history_}
    return result, 0


def format_text(r: dict[str, Any]) -> str:
    f = r["featurize"]
    lines = [
        f"best: {r['best_pipeline']}",
        f"CV {r['scoring']} {r['cv_score']:.4f} (std {r['cv_std']:.4f}) over {r['n_splits']} folds, "
        f"{r['n_candidates']} candidates searched in {r['search_seconds']:.1f} s",
        f"{r['n_images']} images in {len(r['classes'])} classes; featurized {f['featurized']}, "
        f"from cache {f['cached']}, failed {f['failed']}; fit {r['fit_seconds']:.1f} s",
        f"saved {r['model']}",
    ]
    if "finetune" in r:
        t = r["finetune"]
        lines.insert(0, f"fine-tuned {len(t['history'])} epoch(s), best {t['best_epoch']}, on {t['n_train']} images "
                        f"(+{t['n_val']} validation) in {t['seconds']:.1f} s, {t['images_per_second']:.1f} images/s "
                        f"({t['device']} {t['precision']}); backbone checkpoint {t['checkpoint']}")
    for x in r["failures"][:20]:
        lines.append(f"  left out {x['path']}: {x['reason']}")
    for x in r["skipped"][:10]:
        lines.append(f"  skipped {x['path']}: {x['reason']}")
    return "\n".join(lines)
