"""The logistic-regression C grid solved as one path vs refitted per C, in one run.

Scores one train/validation split of scikit-learn's digits (2, 3 and 10 classes; 64 pixel
features and the same with 1,000 noise features appended, so that the row-space shortcut
applies) with the default full grid (45 logistic-regression and 9 linear-SVM candidates),
once with the path solver and once refitting per C, and checks that every score,
validation log-loss and prediction is the same.

Usage: python benchmarks/logreg_path.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

from deepfeat.classify import fold_scores
from deepfeat.classify.candidates import FULL_GRID
from deepfeat.classify.cost import machine


def _time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="best of N timings per case")
    args = ap.parse_args()
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    cands = [{"head": "logreg", "C": c} for c in FULL_GRID["logreg"]["C"]]
    cands += [{"head": "linsvm", "C": c} for c in FULL_GRID["linsvm"]["C"]]
    real = fold_scores._logreg_path
    print(f"CPU: {machine()}; "
          f"path solver available: {fold_scores._path_solver() is not None}")
    print(f"{'classes':>7} {'images':>6} {'features':>8}  {'path ms':>8} {'per C ms':>8}  ratio  same")
    ratios = []
    for n_classes, n in ((2, 20), (3, 15), (10, 60), (10, 400)):
        idx = rng.permutation(np.flatnonzero(y < n_classes))[:n]
        for wide in (False, True):
            Xs = X[idx] if not wide else np.hstack([X[idx], rng.normal(size=(n, 1000))])
            ys = y[idx]
            train, test = np.flatnonzero(np.arange(n) % 5 != 0), np.flatnonzero(np.arange(n) % 5 == 0)

            def run(Xs=Xs, ys=ys, train=train, test=test):
                return fold_scores.score_fold(Xs, ys, train, test, "standardize", cands, None,
                                              metric="accuracy")

            fold_scores._logreg_path = real
            t_path, a = _time(run, args.repeats)
            fold_scores._logreg_path = lambda *a, **k: None
            t_refit, b = _time(run, args.repeats)
            fold_scores._logreg_path = real
            same = all(np.array_equal(u, v, equal_nan=True) for u, v in zip(a[:2] + a[4:], b[:2] + b[4:]))
            ratios.append(t_refit / t_path)
            print(f"{n_classes:>7} {n:>6} {Xs.shape[1]:>8}  {t_path * 1e3:8.1f} {t_refit * 1e3:8.1f}  "
                  f"{t_refit / t_path:5.2f}  {same}")
    print(f"refit per C / path, geometric mean: {np.exp(np.mean(np.log(ratios))):.2f}")


if __name__ == "__main__":
    main()
