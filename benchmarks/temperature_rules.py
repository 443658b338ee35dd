"""Which rule keeps the fitted temperature: held-out ECE and log-loss of three rules.

The default model (:class:`~deepfeat.classify.TransferClassifier`, what ``deepfeat fit``
does) is fitted once per draw; its refit head is then given the temperature of each rule,
and the held-out probabilities are scored (the labels are the same under every rule):

* ``T=1``: the head's own probabilities (no calibration);
* ``default``: what deepfeat does (:func:`~deepfeat.classify.calibration.fit_temperature`):
  the fitted ``T``, kept where it lowers the plain out-of-fold log-loss;
* ``one_se``: the fitted ``T`` kept only where it lowers the out-of-fold log-loss by more
  than one standard error of the per-image differences (the head search's one-SE rule);
* ``scaled_C``: the default rule, on fold heads fitted with ``C * n / n_fold`` (``n_fold``:
  the mean training-fold size) so that they are regularised as the refit on all ``n``
  images is (scikit-learn's ``C`` multiplies the summed loss).

Draws (numpy seeds 0..draws-1): images from ``benchmarks/calibration.py``'s splits (oxford17
at 3, 5, 10 and 40 per class, brain_mri4 at 20 and 100 per class, warm caches in
``--cache-dir``), texts from ``benchmarks/text_quality.py``'s draws (amazon, yelp, imdb,
spam at 8 and 32 per class, 300 test texts, the MiniLM backbone).

Usage::

    python benchmarks/temperature_rules.py --cache-dir /tmp/cal [--draws 4] [--only images|texts]

Prints one line per draw, then the mean held-out ECE / log-loss of each rule per setting
and over all draws.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import clone

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier
from deepfeat.classify.calibration import (
    TEMPERATURE_BOUNDS,
    _decisions,
    _losses,
    first_covering,
    fit_temperature,
    out_of_fold_decisions,
    temperature_proba,
)
from deepfeat.classify.cost import machine
from deepfeat.classify.metrics import calibration_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration import SHARED, per_class, split  # noqa: E402 - the image benchmark's splits

RULES = ("T=1", "default", "one_se", "scaled_C")
IMAGE_SETTINGS = (("oxford17", (3, 5, 10, None)), ("brain_mri4", (20, None)))
TEXT_SETS = ("amazon", "yelp", "imdb", "spam")


def scaled_c(head, X: np.ndarray, y: np.ndarray, cv):
    """``head`` with ``C * n / n_fold`` (``n_fold``: the mean training-fold size), or None
    for a head without ``C``."""
    if "C" not in head.get_params():
        return None
    n_fold = np.mean([len(tr) for tr, _ in first_covering(cv.split(X, y))])
    return clone(head).set_params(C=head.get_params()["C"] * len(y) / n_fold)


def one_se_temperature(scores: np.ndarray, codes: np.ndarray) -> float:
    """The default fit of ``T``, kept only when its gain beats one standard error."""
    spread = float(np.std(scores))
    lo, hi = np.log(np.asarray(TEMPERATURE_BOUNDS) * spread)
    smooth = 1.0 / (len(codes) + 1)
    res = minimize_scalar(
        lambda lt: float(np.mean(_losses(lt, scores, codes, smooth))), bounds=(lo, hi), method="bounded"
    )
    gain = _losses(0.0, scores, codes) - _losses(float(res.x), scores, codes)
    return float(np.exp(res.x)) if gain.mean() > gain.std(ddof=1) / np.sqrt(len(gain)) else 1.0


def score_rules(clf, Etr: np.ndarray, ytr, Ete: np.ndarray, yte) -> dict[str, tuple[float, float, float]] | None:
    """``rule -> (T, held-out ECE, held-out log-loss)`` for a fitted default model."""
    pipe = clf.search_.best_estimator_
    pre, head = pipe.named_steps["preprocess"], pipe.named_steps["head"]
    if not hasattr(head, "estimator_"):  # no folds: no calibration to compare
        return None
    Z, Zte = pre.transform(Etr), pre.transform(Ete)
    d, ytr = _decisions(head, Zte), np.asarray(ytr)
    scaled = scaled_c(head.estimator, Z, ytr, head.cv)
    temps = {
        "T=1": 1.0,
        "default": head.temperature_,  # what fit kept
        "one_se": one_se_temperature(*out_of_fold_decisions(head.estimator, Z, ytr, head.cv)),
        "scaled_C": head.temperature_ if scaled is None
        else fit_temperature(*out_of_fold_decisions(scaled, Z, ytr, head.cv))[0],
    }
    out = {}
    for rule, t in temps.items():
        r = calibration_report(np.asarray(yte), temperature_proba(d, t), clf.classes_)
        out[rule] = (t, r["ece"], r["log_loss"])
    return out


def image_draws(cache_dir: Path, data: Path, draws: int):
    for ds, ks in IMAGE_SETTINGS:
        for k in ks:
            for seed in range(draws):
                Xtr, ytr, test = split(data / ds, seed)
                if k:
                    Xtr, ytr = per_class(Xtr, ytr, k, seed)
                emb = ImageEmbedder(cache=str(cache_dir / f"{ds}.h5"), device="cpu")
                clf = TransferClassifier(emb).fit(Xtr, ytr)
                yield (f"{ds} k={k or 'all'}", seed,
                       score_rules(clf, clf._embeddings(list(Xtr)), ytr, clf._embeddings(test.paths), test.labels))


def text_draws(draws: int):
    import text_quality as tq

    for name in TEXT_SETS:
        X, y = tq.load_set(tq.DEFAULT_DATA, name)
        for k in (8, 32):
            for seed in range(draws):
                tr, te = tq.draw(y, k, (7, k, seed), 300)
                clf = TransferClassifier("minilm", EmbeddingClassifier(random_state=seed)).fit(list(X[tr]), y[tr])
                yield (f"{name} k={k}", seed,
                       score_rules(clf, clf._embeddings(list(X[tr])), y[tr], clf._embeddings(list(X[te])), y[te]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True, help="folder of <dataset>.h5 image caches")
    ap.add_argument("--data", default=str(SHARED), help="folder holding oxford17/ and brain_mri4/")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--only", choices=("images", "texts"), default=None)
    args = ap.parse_args(argv)
    print(f"CPU: {machine()}")
    runs = []
    if args.only != "texts":
        runs.append(image_draws(Path(args.cache_dir), Path(args.data), args.draws))
    if args.only != "images":
        runs.append(text_draws(args.draws))
    by_setting: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        for setting, seed, res in run:
            if res is None:
                print(f"{setting} seed {seed}: no folds, no calibration", flush=True)
                continue
            by_setting[setting].append(res)
            print(f"{setting} seed {seed}: " + " | ".join(
                f"{r} T {t:.3g} ECE {e:.3f} LL {ll:.3f}" for r, (t, e, ll) in res.items()), flush=True)
    print(f"\nmean held-out ECE / log-loss per setting\n{'setting':<16} draws " +
          " ".join(f"{r:>14}" for r in RULES))
    every = []
    for setting, rows in by_setting.items():
        every += rows
        print(f"{setting:<16} {len(rows):5d} " + " ".join(
            f"{np.mean([x[r][1] for x in rows]):6.3f}/{np.mean([x[r][2] for x in rows]):.3f}" for r in RULES))
    print(f"{'all':<16} {len(every):5d} " + " ".join(
        f"{np.mean([x[r][1] for x in every]):6.3f}/{np.mean([x[r][2] for x in every]):.3f}" for r in RULES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
