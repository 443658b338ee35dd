"""``deepfeat evaluate``: score a saved model on labelled images."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.classify.metrics import evaluation_report, format_report
from deepfeat.cli.cmd_predict import add_model_options, load_image_model
from deepfeat.cli.text_inputs import add_text_options, check_model_reads, read_labeled_texts
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
    p.add_argument("--label-col", "--label-column", dest="label_col", default="label",
                   help="label column of a manifest")
    p.add_argument("--out", default=None, help="also write the per-image predictions to this CSV")
    add_text_options(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    model = load_image_model(args)
    kind = check_model_reads(model, args.src, args.text_col)
    skipped = []
    if kind == "text":
        tds = read_labeled_texts(args.src, args.text_col, args.label_col)
        table = model.predict_table(tds.texts)
        table.insert(0, "row", tds.rows)
        key, labels_true = "row", tds.labels
        skipped = [{"path": f["row"], "reason": f["reason"]} for f in tds.failed]
    else:
        ds = load_labeled(args.src, path_col=args.path_col, label_col=args.label_col)
        table = model.predict_table(ds.paths)
        key, labels_true = "path", ds.labels
    table.insert(table.columns.get_loc(key) + 1 + (kind == "text"), "true_label", labels_true)
    if args.out:
        table.to_csv(args.out, index=False)
    ok = (table["status"] == "ok").to_numpy()
    if not ok.any():
        raise InputError(f"{args.src}: none of the {len(ok)} images could be read")
    labels = sorted({str(c) for c in model.classes_} | set(labels_true))
    cols = [f"proba_{c}" for c in model.classes_]
    proba = table.loc[ok, cols].to_numpy(dtype=float) if set(cols) <= set(table) else None
    report = evaluation_report(
        table["true_label"][ok],
        table["label"][ok].astype(str),
        labels=labels,
        proba=proba,
        classes=[str(c) for c in model.classes_],
    )
    unknown = sorted(set(labels_true) - {str(c) for c in model.classes_})
    report.update(
        {
            "model": args.model,
            "source": args.src,
            "n_failed": int((~ok).sum()) + len(skipped),
            "failures": [
                {"path": p, "reason": s} for p, s in zip(table[key][~ok], table["status"][~ok])
            ] + skipped,
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
    if r["failures"]:
        lines.append(f"\n{len(r['failures'])} inputs could not be read and are not counted:")
        lines += [f"  {f['path']}: {f['reason']}" for f in r["failures"][:20]]
    return "\n".join(lines)
