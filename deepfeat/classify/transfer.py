""":class:`TransferClassifier`: images and labels in, a tuned classifier on cached embeddings out."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from deepfeat.classify.candidates import DEFAULT_HEADS, DEFAULT_PREPROCESSING
from deepfeat.classify.cv import check_cv_possible
from deepfeat.classify.embedder import ImageEmbedder, as_image_list, describe_failures
from deepfeat.classify.search import EmbeddingClassifier, results_frame
from deepfeat.exceptions import InputError
from deepfeat.featurize import DEFAULT_BACKBONE, FeaturizeResult

__all__ = ["TransferClassifier"]

log = logging.getLogger(__name__)

_EMBEDDER_PARAMS = (
    "backbone",
    "layer",
    "pool",
    "weights",
    "checkpoint",
    "cache",
    "device",
    "precision",
    "batch_size",
    "num_workers",
    "tta",
    "jit",
    "storage_dtype",
    "lock_timeout",
)
_SEARCH_PARAMS = (
    "heads",
    "preprocessing",
    "param_grid",
    "cv",
    "scoring",
    "class_weight",
    "calibrate",
    "n_jobs",
    "random_state",
    "verbose",
)


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Transfer learning in one estimator: pretrained CNN embeddings + a searched head.

    ``fit`` embeds the images with :class:`~deepfeat.classify.embedder.ImageEmbedder`
    (only the images its cache lacks go through the network), then fits an
    :class:`~deepfeat.classify.search.EmbeddingClassifier`, which chooses preprocessing,
    head and regularisation by cross-validation and refits the best on all images.

    Parameters
    ----------
    backbone, layer, pool, weights, checkpoint, tta, cache, device, precision, jit, batch_size, num_workers, storage_dtype, lock_timeout
        The feature space and how to compute it; see
        :class:`~deepfeat.classify.embedder.ImageEmbedder`. ``cache``, ``device``,
        ``precision``, ``batch_size`` and ``num_workers`` may be changed after fitting
        (e.g. to predict on another machine).
    heads, preprocessing, param_grid, cv, scoring, class_weight, calibrate, n_jobs, random_state
        The search; see :class:`~deepfeat.classify.search.EmbeddingClassifier`.
    verbose : int, default=0
        ``> 0``: progress of featurizing and of the search on stderr.

    Attributes
    ----------
    embedder_ : ImageEmbedder
        The fitted embedder.
    search_ : EmbeddingClassifier
        The fitted search (its ``best_estimator_`` is the head).
    featurizer_spec_ : dict
        The backbone's specification (what a saved model records instead of the network).
    classes_ : ndarray of shape (n_classes,)
    best_params_, best_score_, best_std_, cv_results_, n_splits_
        Copied from :attr:`search_`; :attr:`cv_results_frame_` is a DataFrame.
    failures_ : list of dict
        ``{"index", "path", "reason"}`` of training images that could not be read; they
        were left out of the fit (each is logged as a warning).
    featurize_summary_ : dict
        Counts and timing of the featurization of the training images.

    Notes
    -----
    ``predict``, ``predict_proba``, ``decision_function`` and ``score`` raise
    :class:`~deepfeat.exceptions.InputError` naming any image that cannot be read: they
    cannot return a label for it. :meth:`predict_table` reports such images row by row.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> dark = [rng.integers(0, 60, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    >>> light = [rng.integers(190, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    >>> clf = TransferClassifier(device="cpu", heads="logreg").fit(dark + light, [0] * 4 + [1] * 4)
    >>> clf.predict(dark[:1] + light[:1]).tolist()
    [0, 1]
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        layer: str | None = None,
        pool: str = "avg",
        weights: str | None = "DEFAULT",
        checkpoint: str | None = None,
        cache: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        num_workers: int | str = "auto",
        tta: str = "none",
        jit: bool | str = "auto",
        storage_dtype: str = "float32",
        lock_timeout: float | None = 30.0,
        heads: str | Sequence[str] = DEFAULT_HEADS,
        preprocessing: str | Sequence[str] = DEFAULT_PREPROCESSING,
        param_grid: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        cv: Any = None,
        scoring: Any = "accuracy",
        class_weight: Any = None,
        calibrate: bool = True,
        n_jobs: int | None = None,
        random_state: int | None = 0,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.layer = layer
        self.pool = pool
        self.weights = weights
        self.checkpoint = checkpoint
        self.cache = cache
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.tta = tta
        self.jit = jit
        self.storage_dtype = storage_dtype
        self.lock_timeout = lock_timeout
        self.heads = heads
        self.preprocessing = preprocessing
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.class_weight = class_weight
        self.calibrate = calibrate
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # file paths
        return tags

    # ------------------------------------------------------------------ helpers
    def _embedder_params(self) -> dict[str, Any]:
        p = {k: getattr(self, k) for k in _EMBEDDER_PARAMS}
        p["progress"] = bool(self.verbose)
        return p

    def _embed(self, X: Any) -> FeaturizeResult:
        """Embed with the current runtime settings (they may have changed since fit)."""
        check_is_fitted(self, "search_")
        runtime = {
            k: v
            for k, v in self._embedder_params().items()
            if k not in ("backbone", "layer", "pool", "weights", "checkpoint", "tta")
        }
        if any(self.embedder_.get_params()[k] != v for k, v in runtime.items()):
            self.embedder_.set_params(**runtime)
        return self.embedder_.embed(X)

    def _embeddings(self, X: Any) -> np.ndarray:
        res = self._embed(X)
        if res.failures:
            raise InputError(
                describe_failures(res.failures, len(res.ok))
                + "; predict_table() reports each image's status instead of raising"
            )
        return res.features

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any) -> TransferClassifier:
        """Embed the images (once per unique image) and search the head.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or ``HxW[xC]`` arrays; see
            :func:`~deepfeat.classify.data.load_xy` to read a folder or a manifest.
        y : array-like of shape (n_images,)
            Class labels.

        Returns
        -------
        self

        Raises
        ------
        InputError
            Fewer than two classes, a class with a single (readable) image, no readable
            image at all, or ``X`` and ``y`` of different lengths.
        """
        if y is None:
            raise InputError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        default_cv = self.cv is None or isinstance(self.cv, (int, np.integer))
        if default_cv:
            check_cv_possible(y)
        items = as_image_list(X)
        if len(items) != len(y):
            raise InputError(f"X holds {len(items)} images but y holds {len(y)} labels")
        # Heads, preprocessing and grids are checked before any image is embedded.
        EmbeddingClassifier(**{k: getattr(self, k) for k in _SEARCH_PARAMS})._check_params()
        self.embedder_ = ImageEmbedder(**self._embedder_params(), on_error="nan").fit(items)
        self.featurizer_spec_ = self.embedder_.featurizer_spec_
        res = self.embedder_.embed(items)
        self.failures_ = list(res.failures)
        self.featurize_summary_ = dict(res.summary)
        if not res.ok.any():
            raise InputError(describe_failures(res.failures, len(items)))
        if res.failures:
            log.warning(
                "%s; they are left out of the fit", describe_failures(res.failures, len(items))
            )
            if default_cv:
                try:
                    check_cv_possible(y[res.ok])
                except InputError as exc:
                    raise InputError(
                        f"after leaving out {len(res.failures)} unreadable image(s): {exc}"
                    ) from None
        self.search_ = EmbeddingClassifier(**{k: getattr(self, k) for k in _SEARCH_PARAMS})
        self.search_.fit(res.features[res.ok], y[res.ok])
        self.classes_ = self.search_.classes_
        for name in ("best_params_", "best_score_", "best_std_", "cv_results_", "n_splits_"):
            setattr(self, name, getattr(self.search_, name))
        return self

    # ------------------------------------------------------------------ predicting
    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each image."""
        E = self._embeddings(X)
        return self.search_.predict(E)

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values of the chosen head."""
        E = self._embeddings(X)
        return self.search_.decision_function(E)

    def _has_proba(self) -> bool:
        if hasattr(self, "search_"):
            return hasattr(self.search_, "predict_proba")
        return EmbeddingClassifier(self.heads, calibrate=self.calibrate)._has_proba()

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in :attr:`classes_` order."""
        E = self._embeddings(X)
        return self.search_.predict_proba(E)

    def predict_table(self, X: Any, *, paths: Sequence[str] | None = None) -> Any:
        """Predictions as a table that keeps going past unreadable images.

        Parameters
        ----------
        X : sequence of images
        paths : sequence of str or None, default=None
            Names for the ``path`` column (default: ``X`` itself when it holds paths,
            else a description of each image).

        Returns
        -------
        pandas.DataFrame
            One row per image: ``path``, ``label`` (empty when unreadable),
            ``proba_<class>`` per class (when the head has probabilities) and ``status``
            (``"ok"`` or why the image could not be read).
        """
        import pandas as pd

        items = as_image_list(X)
        res = self._embed(items)
        n = len(items)
        if paths is None:
            paths = [
                os.fspath(p) if isinstance(p, (str, os.PathLike)) else f"<{type(p).__name__} #{i}>"
                for i, p in enumerate(items)
            ]
        labels = np.full(n, None, dtype=object)
        status = np.full(n, "ok", dtype=object)
        for f in res.failures:
            status[f["index"]] = f["reason"]
        # file names that are not valid UTF-8 (lone surrogates) as \xNN escapes: pandas'
        # string columns (and the CSV written from them) cannot hold the raw bytes
        paths = [p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for p in paths]
        df = pd.DataFrame({"path": paths})
        ok = res.ok
        if ok.any():
            labels[ok] = self.search_.predict(res.features[ok])
        df["label"] = labels
        if hasattr(self.search_, "predict_proba"):
            proba = np.full((n, len(self.classes_)), np.nan)
            if ok.any():
                proba[ok] = self.search_.predict_proba(res.features[ok])
            for j, c in enumerate(self.classes_):
                df[f"proba_{c}"] = proba[:, j]
        df["status"] = status
        return df

    @property
    def cv_results_frame_(self) -> Any:
        """:attr:`cv_results_` as a pandas DataFrame, best candidates first."""
        check_is_fitted(self, "search_")
        return results_frame(self.cv_results_)

    def describe(self) -> str:
        """One line naming the backbone, the chosen preprocessing and head, and the CV score."""
        check_is_fitted(self, "search_")
        spec = self.featurizer_spec_
        p = self.best_params_
        extra = "".join(f", {k}={p[k]:.3g}" for k in ("C", "gamma") if k in p)
        score = self.search_.scoring if isinstance(self.search_.scoring, str) else "score"
        return (
            f"{spec['backbone']} [{spec['layer']}, {spec['pool']}] -> {p['preprocess']} -> {p['head']}"
            f"({extra.lstrip(', ')}); CV {score} {self.best_score_:.4f} +/- {self.best_std_:.4f} "
            f"over {self.n_splits_} folds"
        )
