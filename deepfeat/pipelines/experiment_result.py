"""What an experiment measured and where it was written: :class:`ExperimentResult`.

Its own module, below both the stages that fill it (:mod:`deepfeat.pipelines.experiment`)
and the report that renders it (:mod:`deepfeat.pipelines.report`), so neither imports the other
back.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfeat.pipelines.audit import DataAudit
from deepfeat.pipelines.experiment_spaces import AUTO, FeatureSpace
from deepfeat.pipelines.extrapolate import Extrapolation
from deepfeat.pipelines.summary import gains_to_dict

__all__ = ["ExperimentResult", "versions"]


@dataclass
class ExperimentResult:
    """Everything an experiment measured and where it was written.

    Attributes
    ----------
    out : pathlib.Path
        The report folder.
    config : dict
        The arguments, as run.
    spaces : list of FeatureSpace
        Main space first.
    table : pandas.DataFrame
        Tidy per-draw results (one row per space, shot value and repeat).
    summary : pandas.DataFrame
        Mean and 95% t-interval per space and shot value.
    gains : dict of str to pandas.DataFrame
        Paired gain of the main space over each baseline space, per shot value.
    verdicts : list of str
        Plain sentences on transfer versus each baseline.
    extrapolations : dict of str to Extrapolation
        Power-law fits per space (where three or more k values were measured).
    extrapolation_failures : dict of str to str
        Spaces whose power-law fit failed (did not converge), with the reason; the rest
        of the experiment is reported as usual.
    audit : DataAudit
    featurization : dict of str to dict
        Per space: images, cache hits, forward passes, failures, seconds.
    best : dict
        The space with the highest mean accuracy at the reference shot value (the
        largest k measured on several draws) and the held-out predictions of all its
        draws there (``test``, ``y_pred``, ``confidence``, ``repeat``, ``n_draws``).
    data : dict
        Counts of images, classes, pool and test set, and the protocol in words.
    paths, labels, split : sequences
        Every image of the run, its label and its side (``"train"``/``"test"``).
    notes : list of str
        Everything the run adjusted or skipped, and why.
    timings : dict of str to float
        Seconds per stage.
    files : dict of str to str
        Output files, relative to ``out``.
    strategies : StrategyComparison or None
        Frozen features vs fine-tuning on the same draws (``strategies`` included
        ``"finetune"``); see :mod:`deepfeat.pipelines.strategies`.
    """

    out: Path
    config: dict[str, Any]
    spaces: list[FeatureSpace]
    table: pd.DataFrame
    summary: pd.DataFrame
    gains: dict[str, pd.DataFrame]
    verdicts: list[str]
    extrapolations: dict[str, Extrapolation]
    audit: DataAudit
    featurization: dict[str, dict[str, Any]]
    best: dict[str, Any]
    data: dict[str, Any]
    paths: list[str] = field(default_factory=list, repr=False)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str), repr=False)
    split: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str), repr=False)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    extrapolation_failures: dict[str, str] = field(default_factory=dict)
    strategies: Any = None  # StrategyComparison (frozen vs fine-tuned) when asked for

    @property
    def report_html(self) -> Path:
        """Path of the HTML report."""
        return self.out / self.files.get("report", "report.html")

    @property
    def main(self) -> FeatureSpace:
        return self.spaces[0]

    @property
    def labels_space(self) -> str:
        """The space "how many labels" is answered for: the one ``deepfeat fit`` would use.

        The automatic choice (``select="auto"``) when it was measured, else the main space.
        """
        return next((s.name for s in self.spaces if s.role == AUTO), self.main.name)

    def _calibration(self) -> dict[str, Any]:
        """Held-out log-loss and ECE of the best space at the reference k (means over draws)."""
        t, b = self.table, self.best
        rows = t[(t["space"] == b["space"]) & (t["shots"] == str(b["shots"]))]
        if "log_loss" not in rows or rows["log_loss"].isna().all():
            return {}
        return {
            "space": b["space"],
            "shots": str(b["shots"]),
            "draws": int(len(rows)),
            "log_loss": float(rows["log_loss"].mean()),
            "ece": float(rows["ece"].mean()),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able digest (the full tables are in the CSV files)."""

        def cell(r: pd.Series) -> dict[str, Any]:
            lo, hi = (None if not np.isfinite(v) else float(v) for v in (r.ci_low, r.ci_high))
            return {
                "k": float(r.k),
                "draws": int(r.repeats),
                "mean": float(r["mean"]),
                "ci_low": lo,
                "ci_high": hi,
            }

        accuracy = {
            space: {str(r.shots): cell(r) for _, r in grp.iterrows()}
            for space, grp in self.summary.groupby("space", sort=False)
        }
        return {
            "report": str(self.report_html),
            "out": str(self.out),
            "data": self.data,
            "main_space": self.main.name,
            "labels_space": self.labels_space,
            "reference_shots": self.best["shots"],
            "accuracy": accuracy,
            "gains": gains_to_dict(self.gains),
            "verdicts": self.verdicts,
            "calibration": self._calibration(),
            "extrapolation": {k: v.to_dict() for k, v in self.extrapolations.items()},
            "extrapolation_failures": self.extrapolation_failures,
            "audit": self.audit.to_dict(),
            "cache": {
                k: {x: v.get(x) for x in ("total", "cached", "featurized", "failed", "seconds")}
                for k, v in self.featurization.items()
            },
            "notes": self.notes,
            "timings": self.timings,
            "files": self.files,
            **({"strategies": self.strategies.to_dict()} if self.strategies is not None else {}),
        }


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import matplotlib
    import sklearn
    import torch

    from deepfeat import __version__

    out = {
        "deepfeat": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(terse=True),
    }
    for mod in ("torchvision", "timm", "h5py"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    return out
