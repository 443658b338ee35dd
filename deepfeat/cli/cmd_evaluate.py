"""``deepfeat evaluate``: score a saved model on labelled images."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.classify.metrics import evaluation_report, format_report
from deepfeat.cli.cmd_predict import add_model_options, load_image_model
from deepfeat.exceptions import InputError
from deepfeat.featurize.inputs import load_labeled

HELP = (
    "evaluate a saved model on labelled images: accuracy, balanced accuracy, macro F1, "
    "log-loss and calibration error, confusion matrix"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.joblib or .skops) written by `deepfeat fit`")
    p.add_argument("src", help="folder of class subfolders, or a CSV/parquet manifest (path,label)")
    p.add_argument("--path-col", default="path", help="path column of a manifest")
    p.add_argument("--label-col", default="label", help="label column of a manifest")
    p.add_argument("--out", default=None, help="also write the per-image predictions to this CSV")
    add_model_options(p)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    model = load_image_model(args)
    ds = load_labeled(args.src, path_col=args.path_col, label_col=args.label_col)
    table = model.predict_table(ds.paths)
    table.insert(1, "true_label", ds.labels)
    if args.out:
        table.to_csv(args.out, index=False)
    ok = (table["status"] == "ok").to_numpy()
    if not ok.any():
        raise InputError(f"{args.src}: none of the {len(ok)} images could be read")
    labels = sorted({str(c) for c in model.classes_} | set(ds.labels))
    cols = [f"proba_{c}" for c in model.classes_]
    proba = table.loc[ok, cols].to_numpy(dtype=float) if set(cols) <= set(table) else None
    report = evaluation_report(
        table["true_label"][ok],
        table["label"][ok].astype(str),
        labels=labels,
        proba=proba,
        classes=[str(c) for c in model.classes_],
    )
    unknown = sorted(set(ds.labels) - {str(c) for c in model.classes_})
    report.update(
        {
            "model": args.model,
            "source": args.src,
            "n_failed": int((~ok).sum()),
            "failures": [
                {"path": p, "reason": s} for p, s in zip(table["path"][~ok], table["status"][~ok])
            ],
            "labels_unknown_to_model": unknown,
        }
    )
    return report, 0


def format_text(r: dict[str, Any]) -> str:
    lines = [format_report(r)]
    if r["labels_unknown_to_model"]:
        lines.append(
            f"\nclasses the model was not trained on: {', '.join(r['labels_unknown_to_model'])}"
        )
    if r["n_failed"]:
        lines.append(f"\n{r['n_failed']} images could not be read and are not counted:")
        lines += [f"  {f['path']}: {f['reason']}" for f in r["failures"][:20]]
    return "\n".join(lines)
