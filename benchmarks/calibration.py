"""Calibration of the default ``fit``: held-out ECE and log-loss before -> after, labels unchanged.

For each setting, the default :class:`~deepfeat.classify.TransferClassifier` (what
``deepfeat fit`` does: spaces and head chosen together, probabilities temperature-scaled
out of fold) is fitted on the training images and scored on the held-out ones:

* **before**: the chosen head's own probabilities, ``softmax(decision)`` (``T = 1``; for
  a logistic regression these are exactly its ``predict_proba``, i.e. what the code before
  calibration served; an SVM had its temperature already);
* **after**: the model's ``predict_proba`` (the temperature fitted out of fold);
* labels: the arg-max of both and ``predict`` must agree on every image;
* **served before** (full settings, with ``--before DIR``): the held-out figures of the
  model the unmodified code saved (``DIR/<dataset>.joblib``), and whether its labels
  equal the new model's. For a logistic-regression head it equals "before"; an SVM head
  was already temperature-scaled (on absolute bounds, over every fold).

ECE is the top-label expected calibration error over 10 equal-width bins
(:func:`deepfeat.classify.metrics.calibration_report`). A reliability plot (before and
after) is written per setting.

Settings (``--settings``), drawn from ``--data`` (``../shared/datasets`` beside the
repository) with numpy's ``default_rng(seed)`` per class (``--seeds``, 0 by default), so
that the figures need nothing outside this repository:

* ``oxford17``: the 80 photos of each class split 40 train / 40 test;
* ``brain_mri4``: 100 per class drawn from its ``train/``, scored on its whole ``test/``
  folder (1,311 images);
* ``dataset:n``: ``n`` of those training images per class (``oxford17:10``,
  ``brain_mri4:20``), the same test images.

Usage::

    python benchmarks/calibration.py --data ../shared/datasets --cache-dir /tmp/cal \\
        --out docs/calibration [--settings oxford17,brain_mri4,oxford17:10,brain_mri4:20] \
        [--before /work/runs/before]

``--cache-dir`` holds ``<dataset>.h5`` (copy warm caches there: featurizing both sets on
a CPU takes tens of minutes). Prints one line per setting and writes ``calibration.json``
and ``reliability_<setting>.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from deepfeat.classify import ImageEmbedder, TransferClassifier
from deepfeat.classify.calibration import temperature_proba
from deepfeat.classify.cost import machine
from deepfeat.classify.metrics import calibration_report
from deepfeat.featurize.inputs import load_labeled
from deepfeat.pipelines.plots import plot_reliability

#: ``../shared/datasets`` beside the repository, wherever the benchmark is run from
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEFAULT_SETTINGS = "oxford17,brain_mri4,oxford17:10,brain_mri4:20"


def per_class(paths: list[str], labels: list[str], n: int | None, seed: int = 0):
    """``n`` images per class (numpy permutation per class, ``seed``), or all."""
    paths, labels = np.asarray(paths), np.asarray(labels)
    if n is None:
        return list(paths), labels
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    )
    keep.sort()
    return list(paths[keep]), labels[keep]


def split(root: Path, seed: int = 0):
    """Training paths and labels, and the held-out set, of one dataset folder.

    A folder with ``train/`` and ``test/`` gives 100 training images per class (drawn
    with ``seed``) and its whole ``test/``; a folder of class folders is split 40 / 40
    per class.
    """
    if (root / "train").is_dir():
        train = load_labeled(str(root / "train"))
        Xtr, ytr = per_class(train.paths, train.labels, 100, seed)
        return Xtr, ytr, load_labeled(str(root / "test"))
    everything = load_labeled(str(root))
    paths, labels = np.asarray(everything.paths), np.asarray(everything.labels)
    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    tr = np.sort(np.concatenate([o[:40] for o in order]))
    te = np.sort(np.concatenate([o[40:] for o in order]))
    test = dataclasses.replace(everything, paths=list(paths[te]), labels=list(labels[te]))
    return list(paths[tr]), labels[tr], test


def served_before(path: Path, cache: str, test, new_labels: np.ndarray) -> dict | None:
    """Held-out calibration of a model saved by the code before this change, if any."""
    if not path.is_file():
        return None
    from deepfeat.classify import load

    old = load(path, trusted=True).set_embedder_params(cache=cache, device="cpu")
    proba = old.predict_proba(test.paths)
    r = calibration_report(test.labels, proba, old.classes_)
    return {
        "model": str(path),
        "ece": r["ece"],
        "log_loss": r["log_loss"],
        "mean_top_probability": r["mean_confidence"],
        "labels_equal_new": bool((old.classes_[proba.argmax(1)] == new_labels).all()),
    }


def run_setting(
    name: str, data: Path, cache_dir: Path, out: Path, before_dir: Path | None = None,
    seed: int = 0,
) -> dict:
    ds_name, _, n = name.partition(":")
    Xtr, ytr, test = split(data / ds_name, seed)
    if n:
        Xtr, ytr = per_class(Xtr, ytr, int(n), seed)
    cache = str(cache_dir / f"{ds_name}.h5")
    t0 = time.perf_counter()
    clf = TransferClassifier(ImageEmbedder(cache=cache, device="cpu")).fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    # the held-out embeddings once (a private helper: predict_proba and decision_function
    # would each read them again); the head's own outputs come from the fitted search
    E = clf._embeddings(test.paths)
    search = clf.search_
    after = search.predict_proba(E)
    before = temperature_proba(search.decision_function(E), 1.0)  # the head's own
    labels = search.predict(E)
    classes = clf.classes_
    same = bool(
        (classes[after.argmax(1)] == labels).all() and (classes[before.argmax(1)] == labels).all()
    )
    rb = calibration_report(test.labels, before, classes)
    ra = calibration_report(test.labels, after, classes)
    png = out / f"reliability_{name.replace(':', '_')}.png"
    if seed == 0:  # one plot per setting: the first draw's
        plot_reliability(
            {f"before (T=1), ECE {rb['ece']:.3f}": rb["reliability"],
             f"after (T={search.calibration_['temperature']:.3g}), ECE {ra['ece']:.3f}": ra["reliability"]},
            png,
            title=f"{name}: {len(Xtr)} train, {len(test.paths)} held-out images",
        )
    old = None
    if not n and before_dir is not None and seed == 0:
        old = served_before(before_dir / f"{ds_name}.joblib", cache, test, labels)
    return {
        "served_before": old,
        "setting": name,
        "seed": seed,
        "n_train": len(Xtr),
        "n_test": len(test.paths),
        "chosen": clf.describe(),
        "temperature": search.calibration_["temperature"],
        "oof": search.calibration_,
        "accuracy": ra["accuracy"],
        "labels_unchanged": same,
        "ece_before": rb["ece"],
        "ece_after": ra["ece"],
        "log_loss_before": rb["log_loss"],
        "log_loss_after": ra["log_loss"],
        "mean_top_probability_before": rb["mean_confidence"],
        "mean_top_probability_after": ra["mean_confidence"],
        "fit_seconds": round(fit_s, 1),
        "plot": png.name if seed == 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED), help="folder holding oxford17/ and brain_mri4/")
    ap.add_argument("--cache-dir", required=True, help="folder of <dataset>.h5 embedding caches")
    ap.add_argument("--out", default="docs/calibration", help="folder for the JSON and the PNGs")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated dataset[:n per class]")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the training draws")
    ap.add_argument("--before", default=None, help="folder of <dataset>.joblib saved by the code before")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"CPU: {machine()} (shared machine: timings are indicative)")
    print("setting        seed  train  test   acc   ECE before -> after   log-loss before -> after   T     labels")
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for name, seed in ((n, s) for n in settings for s in seeds):
        r = run_setting(name, Path(args.data), Path(args.cache_dir), out,
                        None if args.before is None else Path(args.before), seed)
        rows.append(r)
        print(
            f"{name:<16} {seed:2d} {r['n_train']:5d} {r['n_test']:5d}  {r['accuracy']:.3f}   "
            f"{r['ece_before']:.3f} -> {r['ece_after']:.3f}        "
            f"{r['log_loss_before']:.3f} -> {r['log_loss_after']:.3f}            "
            f"{r['temperature']:<5.3g} {'same' if r['labels_unchanged'] else 'CHANGED'}",
            flush=True,
        )
        print(f"    chosen: {r['chosen']}", flush=True)
        if r["served_before"]:
            b = r["served_before"]
            print(
                f"    served before ({b['model']}): ECE {b['ece']:.3f}, log-loss {b['log_loss']:.3f}; "
                f"labels {'same' if b['labels_equal_new'] else 'DIFFERENT'}",
                flush=True,
            )
    if len(seeds) > 1:
        print("over the draws: mean (worst) held-out ECE after; log-loss after - before, mean (worst)")
        for name in settings:
            mine = [r for r in rows if r["setting"] == name]
            ece = [r["ece_after"] for r in mine]
            dll = [r["log_loss_after"] - r["log_loss_before"] for r in mine]
            print(f"{name:<16} ECE {np.mean(ece):.3f} ({max(ece):.3f}); "
                  f"log-loss {np.mean(dll):+.3f} ({max(dll):+.3f})", flush=True)
    (out / "calibration.json").write_text(
        json.dumps({"cpu": machine(), "results": rows}, indent=2, default=float)
    )
    ok = all(r["labels_unchanged"] for r in rows)
    ok = ok and all(r["served_before"]["labels_equal_new"] for r in rows if r["served_before"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
