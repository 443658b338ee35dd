"""Few-shot text classification side by side: SetFit vs deepfeat's contrastive fine-tune and baselines.

For each set (UCI sentiment: amazon, imdb, yelp; SMS spam) and each k (labels per class),
``--draws`` paired draws: k texts per class drawn for training (seeded by set, k and draw),
the rest of the set as test (``--max-test`` caps it, the same subsample for every method).
On each draw every method fits the same texts and is scored on the same test texts:

- ``setfit``: SetFit 1.2.0 with its documented defaults (``TrainingArguments()``: 1 epoch of
  oversampled pairs, batch 16, body lr 2e-5, logistic-regression head; no checkpoint written,
  seeded per draw) on the same MiniLM directory; skipped with a message when setfit is not installed (a bench-only extra);
- ``contrastive``: :class:`deepfeat.text_finetune.ContrastiveTextClassifier` with its defaults;
- ``frozen_lr``: frozen MiniLM embeddings (mean pooled, normalised) + ``LogisticRegression()``;
- ``tfidf_lr``: TF-IDF of 1-2 grams + ``LogisticRegression()``;
- ``deepfeat_fit``: ``TransferClassifier("minilm")`` with ``fit`` defaults (skipped
  with a message where this branch has no text backbone).

Scores: accuracy (macro-F1 for spam). Intervals: 95 % paired bootstrap over the draws of
(method - SetFit) per draw. Seconds per fit: wall clock of ``fit`` (for ``frozen_lr``, the
encoding of the training texts plus the regression; the test embeddings are computed once per
set). Torch runs on one thread for every method (``torch_single_threaded``).

Usage::

    python benchmarks/text_quality.py [--sets amazon,imdb,yelp,spam] [--k 8,64] [--draws 10]
        [--max-test N] [--methods setfit,contrastive,frozen_lr,tfidf_lr,deepfeat_fit]
        [--data DIR] [--csv rows.csv]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepfeat.process_state import torch_single_threaded

SETS = {
    "amazon": ("uci_sentiment/amazon_cells_labelled.txt", "sentence_label"),
    "imdb": ("uci_sentiment/imdb_labelled.txt", "sentence_label"),
    "yelp": ("uci_sentiment/yelp_labelled.txt", "sentence_label"),
    "spam": ("sms_spam/SMSSpamCollection", "label_sentence"),
}
METHODS = ("setfit", "contrastive", "frozen_lr", "tfidf_lr", "deepfeat_fit")
# ../shared/datasets beside the repository, or $DEEPFEAT_DATASETS (as in tests/conftest.py)
DEFAULT_DATA = Path(os.environ.get("DEEPFEAT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")) / "text"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_set(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Texts (object array) and labels of one set; rows without a tab are skipped."""
    rel, layout = SETS[name]
    texts, labels = [], []
    with open(data / rel, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if "\t" not in line:
                continue
            a, b = (line.rsplit("\t", 1) if layout == "sentence_label" else line.split("\t", 1))
            text, label = (a, b) if layout == "sentence_label" else (b, a)
            if text.strip():
                texts.append(text.strip())
                labels.append(label.strip())
    return np.array(texts, dtype=object), np.array(labels)


def draw(y: np.ndarray, k: int, seed: tuple[int, ...], max_test: int) -> tuple[np.ndarray, np.ndarray]:
    """k training rows per class, and the test rows (all the others, or ``max_test`` of them)."""
    rng = np.random.default_rng(list(seed))
    tr = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y)]))
    te = np.setdiff1d(np.arange(len(y)), tr)
    if max_test and len(te) > max_test:
        te = np.sort(rng.choice(te, max_test, replace=False))
    return tr, te


def score(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = np.asarray(y_pred).astype(y_true.dtype)
    return float(f1_score(y_true, y_pred, average="macro") if name == "spam" else accuracy_score(y_true, y_pred))


def paired_interval(d: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of the per-draw differences ``d`` (bootstrap over draws)."""
    if len(d) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


# ---------------------------------------------------------------------- the methods
# Each returns (fit seconds, predictions on the test texts).

@contextlib.contextmanager
def _quiet() -> Any:
    """SetFit and transformers print progress and notices on stdout/stderr: kept out of the table."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def fit_setfit(model_dir: str, Xtr: list[str], ytr: np.ndarray, Xte: list[str], seed: int) -> tuple[float, np.ndarray]:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    with _quiet(), tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = SetFitModel.from_pretrained(model_dir, local_files_only=True)
        # the documented defaults, less what only costs SetFit time or writes to the cwd: no
        # checkpoint saved (into ./checkpoints), no progress bar, no logging integrations
        args = TrainingArguments(output_dir=tmp, save_strategy="no", show_progress_bar=False,
                                 report_to="none", seed=seed)
        train = Dataset.from_dict({"text": list(Xtr), "label": [str(v) for v in ytr]})
        Trainer(model=model, args=args, train_dataset=train).train()
        seconds = time.perf_counter() - t0
        pred = np.asarray(model.predict(list(Xte), show_progress_bar=False))
    return seconds, pred


def fit_contrastive(model_dir: str, Xtr: list[str], ytr: np.ndarray, Xte: list[str], seed: int
                    ) -> tuple[float, np.ndarray]:
    from deepfeat.text_finetune import ContrastiveTextClassifier

    t0 = time.perf_counter()
    clf = ContrastiveTextClassifier(model_dir, seed=seed).fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    return seconds, clf.predict(Xte)


class FrozenMiniLM:
    """Frozen embeddings of a whole set, computed once; per draw only the head is fitted."""

    def __init__(self, model_dir: str, texts: np.ndarray) -> None:
        from deepfeat.text_finetune import SentenceEncoder

        self.enc = SentenceEncoder(model_dir, 256)
        self.ids, _ = self.enc.tokenize(list(texts))
        self.emb = self.enc.embed(self.ids)

    def fit(self, tr: np.ndarray, te: np.ndarray, ytr: np.ndarray) -> tuple[float, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        emb_tr = self.enc.embed([self.ids[i] for i in tr])  # what a fit pays for its texts
        head = LogisticRegression().fit(emb_tr, ytr)
        seconds = time.perf_counter() - t0
        return seconds, head.predict(self.emb[te])


def fit_tfidf(Xtr: list[str], ytr: np.ndarray, Xte: list[str]) -> tuple[float, np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()).fit(Xtr, ytr)
    return time.perf_counter() - t0, pipe.predict(Xte)


def deepfeat_fit_unavailable() -> str | None:
    """Why ``TransferClassifier("minilm")`` cannot run here, or None."""
    try:
        from deepfeat.classify import TransferClassifier
        from deepfeat.featurize import list_backbones
    except Exception as exc:  # noqa: BLE001 - any import problem is reported as the reason
        return f"deepfeat.classify not importable ({exc})"
    try:
        names = [r["name"] for r in list_backbones("minilm*", families=False)]
    except Exception:  # noqa: BLE001 - a registry that cannot list text encoders has none
        names = []
    if "minilm" not in names:
        return "no 'minilm' text backbone in this branch's registry (issue 27 points 1-3)"
    del TransferClassifier
    return None


def fit_deepfeat(Xtr: list[str], ytr: np.ndarray, Xte: list[str], seed: int) -> tuple[float, np.ndarray]:
    from deepfeat.classify import EmbeddingClassifier, TransferClassifier

    t0 = time.perf_counter()
    clf = TransferClassifier("minilm", EmbeddingClassifier(random_state=seed)).fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    return seconds, clf.predict(Xte)


# ---------------------------------------------------------------------- the run
def run(a: argparse.Namespace, out: Callable[[str], None]) -> list[dict[str, Any]]:
    from deepfeat.text_finetune import default_model_dir

    model_dir = a.model or default_model_dir()
    methods = [m for m in a.methods.split(",") if m]
    bad = set(methods) - set(METHODS)
    if bad:
        raise SystemExit(f"--methods: unknown {sorted(bad)}; choose among {', '.join(METHODS)}")
    skip: dict[str, str] = {}
    if "setfit" in methods and importlib.util.find_spec("setfit") is None:
        skip["setfit"] = "setfit is not installed (pip install setfit==1.2.0: a bench-only extra)"
    if "deepfeat_fit" in methods:
        why = deepfeat_fit_unavailable()
        if why:
            skip["deepfeat_fit"] = why
    for m, why in skip.items():
        out(f"skipping {m}: {why}")
    methods = [m for m in methods if m not in skip]

    rows: list[dict[str, Any]] = []
    for name in a.sets.split(","):
        if name not in SETS:
            raise SystemExit(f"--sets: unknown set {name!r}; choose among {', '.join(SETS)}")
        X, y = load_set(Path(a.data), name)
        set_seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        frozen = FrozenMiniLM(model_dir, X) if "frozen_lr" in methods else None
        for k in (int(v) for v in a.k.split(",")):
            for d in range(a.draws):
                tr, te = draw(y, k, (set_seed, k, d), a.max_test)
                Xtr, ytr, Xte, yte = list(X[tr]), y[tr], list(X[te]), y[te]
                for m in list(methods):
                    if m == "deepfeat_fit":
                        try:
                            sec, pred = fit_deepfeat(Xtr, ytr, Xte, d)
                        except Exception as exc:  # noqa: BLE001 - the other part's contract may lag
                            out(f"dropping deepfeat_fit: TransferClassifier('minilm') failed "
                                f"on {name} k={k} draw {d}: {type(exc).__name__}: {exc}")
                            methods.remove(m)
                            rows = [r for r in rows if r["method"] != m]
                            continue
                    elif m == "setfit":
                        sec, pred = fit_setfit(model_dir, Xtr, ytr, Xte, d)
                    elif m == "contrastive":
                        sec, pred = fit_contrastive(model_dir, Xtr, ytr, Xte, d)
                    elif m == "frozen_lr":
                        sec, pred = frozen.fit(tr, te, ytr)
                    else:
                        sec, pred = fit_tfidf(Xtr, ytr, Xte)
                    rows.append({"set": name, "k": k, "draw": d, "method": m, "score": score(name, yte, pred),
                                 "fit_s": sec, "n_test": len(te)})
                    log.info("%s k=%d draw %d %s: %.4f in %.1f s", name, k, d, m, rows[-1]["score"], sec)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    lines = []
    for (name, k), g in df.groupby(["set", "k"], sort=False):
        metric = "macro-F1" if name == "spam" else "accuracy"
        lines.append(f"\n{name}, k={k} per class, {g['draw'].nunique()} draws, "
                     f"{int(g['n_test'].iloc[0])} test texts, {metric} (%)")
        lines.append(f"{'method':<14}{'score':>8}{'- setfit [95% CI]':>28}{'s/fit':>9}{'x setfit time':>15}")
        wide = g.pivot(index="draw", columns="method", values="score")
        secs = g.groupby("method")["fit_s"].mean()
        for m in [m for m in METHODS if m in wide.columns]:
            cell, ratio = "", ""
            if "setfit" in wide.columns and m != "setfit":
                diff = (wide[m] - wide["setfit"]).to_numpy()
                lo, hi = paired_interval(diff)
                cell = (f"{100 * diff.mean():+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if len(diff) > 1
                        else f"{100 * diff.mean():+.1f} [one draw]")
                ratio = f"{secs[m] / secs['setfit']:.2f}"
            lines.append(f"{m:<14}{100 * wide[m].mean():>8.1f}{cell:>28}{secs[m]:>9.1f}{ratio:>15}")
    return "\n".join(lines)


log = logging.getLogger("text_quality")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="amazon,imdb,yelp,spam")
    ap.add_argument("--k", default="8,64", help="labels per class, comma-separated")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--max-test", type=int, default=0, help="cap on test texts per draw (0: all the rest)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--model", default=None, help="sentence encoder directory (default: the offline MiniLM)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding uci_sentiment/ and sms_spam/")
    ap.add_argument("--csv", default=None, help="write the per-draw rows here")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every fit")
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"--data: {a.data} is not a folder (expected uci_sentiment/ and sms_spam/ inside)", file=sys.stderr)
        return 2
    if a.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    elif importlib.util.find_spec("setfit") is not None:
        import setfit  # its import sets its loggers to INFO, with a handler on stderr

        setfit.logging.set_verbosity_error()
    from deepfeat.benchmarking.profile import machine_load

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores; torch on 1 thread); load before: {machine_load()}")
    t0 = time.perf_counter()
    with torch_single_threaded():
        rows = run(a, print)
    print(table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load after: {machine_load()}")
    if a.csv:
        import pandas as pd

        pd.DataFrame(rows).to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
