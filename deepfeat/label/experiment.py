""":func:`run_acquisition`: ``deepfeat experiment --acquisition``: strategies on a labelled set."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepfeat.exceptions import InputError
from deepfeat.label.simulate import acquisition_report, simulate_acquisition

__all__ = ["run_acquisition"]

log = logging.getLogger(__name__)


def run_acquisition(
    src: str,
    out: str,
    *,
    strategies: Sequence[str],
    shots: Sequence[int | str] = (1, 2, 5, 10),
    repeats: int = 10,
    test_src: str | None = None,
    test_size: int | float = 0.25,
    cache: str | None = None,
    featurizer_options: Mapping[str, Any] | None = None,
    unlabeled: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulate labelling rounds on the labelled set ``src`` and write the comparison.

    The training split is the pool (labels revealed only for the picks); the test split
    (``test_src``, else ``test_size`` per class of ``src``) scores the fits. Everything is
    embedded once, in the backbone's penultimate space, through ``cache``. Writes
    ``acquisition.csv`` (one row per strategy, k, draw, with/without unlabelled) and
    ``acquisition.md`` (the paired comparisons) into ``out``.

    Returns
    -------
    dict
        ``out``, ``table`` (CSV path), ``report`` (markdown path), ``lines`` (the report),
        ``n_pool``, ``n_test``.
    """
    from deepfeat.featurize import DEFAULT_BACKBONE
    from deepfeat.featurize.factory import make_featurizer
    from deepfeat.featurize.inputs import load_labeled
    from deepfeat.featurize.text_sources import is_text_source, read_texts
    from deepfeat.pipelines.sampling import stratified_split

    options = dict(featurizer_options or {})
    text = os.path.exists(os.fspath(src)) and is_text_source(src)

    def read(where: str) -> tuple[list[str], np.ndarray]:
        if text:  # a CSV / folder of texts: the items are the texts
            t = read_texts(where, label_col="label", labeled=True)
            return list(t.texts), np.asarray(t.labels)
        d = load_labeled(where)
        return list(d.paths), np.asarray(d.labels)

    if text and options.get("backbone", DEFAULT_BACKBONE) == DEFAULT_BACKBONE:
        from deepfeat.featurize.text_encoders import DEFAULT_TEXT_BACKBONE

        options["backbone"] = DEFAULT_TEXT_BACKBONE
    paths, y = read(src)
    if test_src is not None:
        te_items, te_y = read(test_src)
        pool_idx = np.arange(len(paths))
        test_idx = np.arange(len(paths), len(paths) + len(te_items))
        paths += te_items
        y = np.r_[y, te_y]
    else:
        pool_idx, test_idx = stratified_split(y, 0.25 if test_size is None else test_size, seed=seed)
    res = make_featurizer(**{"backbone": DEFAULT_BACKBONE, **options, "cache": cache}).featurize(paths)
    ok = np.asarray(res.ok)
    pool_idx, test_idx = pool_idx[ok[pool_idx]], test_idx[ok[test_idx]]
    if not len(pool_idx) or not len(test_idx):
        raise InputError(f"{src}: no readable images left in the pool or the test split")
    ks = [int(k) for k in shots if k != "all"]
    table = simulate_acquisition(res.features[pool_idx], y[pool_idx], res.features[test_idx], y[test_idx],
                                 strategies=strategies, shots=ks, draws=repeats, unlabeled=unlabeled, seed=seed)
    os.makedirs(out, exist_ok=True)
    csv = os.path.join(out, "acquisition.csv")
    table.to_csv(csv, index=False)
    lines = acquisition_report(table, os.path.basename(os.path.normpath(src)))
    md = os.path.join(out, "acquisition.md")
    with open(md, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return {"out": out, "table": csv, "report": md, "lines": lines, "n_pool": int(len(pool_idx)),
            "n_test": int(len(test_idx)), "strategies": list(strategies), "shots": ks, "repeats": repeats}
