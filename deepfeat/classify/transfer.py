""":class:`TransferClassifier`: images and labels in, a tuned classifier on cached embeddings out."""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import FeatureUnion
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from deepfeat.classify.candidates import DEFAULT_HEADS, DEFAULT_PREPROCESSING
from deepfeat.classify.cost import (
    bounded,
    check_bounds,
    forward_passes,
    machine,
    space_cost,
    time_part,
)
from deepfeat.classify.cv import check_cv_possible, class_counts
from deepfeat.classify.embedder import as_image_list, describe_failures
from deepfeat.classify.search import (
    FALLBACK_PARAMS,
    NO_CV_REASON,
    EmbeddingClassifier,
    fit_without_cv,
    results_frame,
)
from deepfeat.classify.select_embed import (
    embed,
    embedder_parts,
    featurize_parts,
    make_embedder,
    with_runtime,
)
from deepfeat.classify.select_space import MAX_CV_SPACES, select_space
from deepfeat.classify.spaces import (
    PART_NORM,
    check_space_spec,
    default_space_specs,
    default_text_space_specs,
    space_name,
    space_parts,
)
from deepfeat.classify.text_embedder import as_text_list
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize import DEFAULT_BACKBONE, FeaturizeResult
from deepfeat.featurize.backbones import backbone_modality
from deepfeat.featurize.text_encoders import TFIDF

__all__ = ["ENSEMBLE_MAX_IMAGES", "TransferClassifier", "without_large_ensembles"]

log = logging.getLogger(__name__)

#: Above this many training images, candidate spaces that mix backbones are skipped: their
#: head search (a 4,400-d space for the offline zoo) costs more than every other space's
#: together, and the gain from an ensemble is largest with few labels. On 3,000 synthetic
#: rows of 100 classes the five default spaces took 66 s with it, four took 15 s without
#: (benchmarks/fit_scaling.py, two runs on a loaded machine).
ENSEMBLE_MAX_IMAGES = 2000

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
    "grid",
    "param_grid",
    "selection",
    "honest",
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
        (e.g. to predict on another machine). A text encoder as ``backbone`` (``"minilm"``,
        ``"hf:<repo>"``; see :class:`~deepfeat.classify.text_embedder.TextEmbedder`) makes
        this a text classifier: ``X`` is then a sequence of strings, ``pool`` is ``"mean"``
        (``"avg"``) or ``"cls"``, and ``tta``, ``jit`` and ``num_workers`` do not apply;
        ``spaces="auto"`` then searches
        :func:`~deepfeat.classify.spaces.default_text_space_specs`.
    spaces : "auto", None or list of space specs, default="auto"
        ``"auto"`` (what ``deepfeat fit`` does, whose defaults are these):
        :func:`~deepfeat.classify.spaces.default_space_specs` of ``backbone`` (its
        penultimate embedding, a late cut point, their concatenation, flip-averaged
        embeddings where the embedder offers them, and the offline zoo's ensemble space
        with the default pretrained weights; with ``layer`` given, that cut point in
        place of the late one). ``None``: only the one space given by ``backbone``,
        ``layer`` and ``pool`` (one featurization per image: the fastest fit). A list:
        these candidates (each a dict of ImageEmbedder space parameters, or a list of
        such dicts to concatenate). The space and the head are chosen together by
        :func:`~deepfeat.classify.select_space.select_space`.
    time_budget : float or None, default=None
        Seconds the whole ``fit`` may take, featurizing included: candidate spaces that
        would not fit in it are skipped (and listed as such in :attr:`selection_`). The
        first candidate space is always used. Candidates that mix several backbones
        (ensembles) are skipped above :data:`ENSEMBLE_MAX_IMAGES` training images, where
        their head search would cost more than every other space's together.
    max_cost : int or None, default=None
        Most forward passes per image a candidate space may take at inference (one per
        part, two for a flip-averaged part; :func:`~deepfeat.classify.cost.forward_passes`);
        costlier candidates are skipped.
    max_ms_per_image : float or None, default=None
        Most milliseconds per image a candidate space's networks may take here (each part
        timed on a few batches before featurizing; :func:`~deepfeat.classify.cost.time_part`);
        slower candidates are skipped. Whatever the bounds, a costlier space is chosen
        only when its CV gain is beyond one standard error (``selection="one_se"``).
    max_cv_spaces : int, default=5
        Candidate spaces cross-validated; more are first pruned by their LogME score.
    heads, preprocessing, grid, param_grid, selection, honest, cv, scoring, class_weight, calibrate, n_jobs, random_state
        The search; see :class:`~deepfeat.classify.search.EmbeddingClassifier`.
    verbose : int, default=0
        ``> 0``: progress of featurizing and of the search on stderr.

    Attributes
    ----------
    embedder_ : ImageEmbedder or FeatureUnion
        The fitted embedder of the chosen space (a FeatureUnion of ImageEmbedders for a
        concatenation: its ``transform`` gives the parts as they are; predicting joins
        them with :func:`~deepfeat.classify.spaces.join_parts`).
    part_norm_ : str
        How the parts of a concatenated space are scaled before they are joined
        (:data:`~deepfeat.classify.spaces.PART_NORM`; models saved before deepfeat scaled
        them lack it and join them as they are).
    space_ : str
        Name of the chosen space (see :func:`~deepfeat.classify.spaces.space_name`).
    space_spec_ : list of dict
        Its full recipe: the ImageEmbedder space parameters of each part.
    selection_ : dict
        What was tried: ``spaces`` (one row per candidate space, with its status and
        scores), ``candidates`` (every cross-validated head candidate of every space, with
        its CV score; the chosen one has ``chosen=True``), ``chosen``, ``cv_score_optimistic``, ``honest_score`` and
        ``honest_std``.
    honest_score_ : float
        Bootstrap bias-corrected CV estimate of the accuracy of the whole selection
        (spaces and heads) on unseen images; ``best_score_`` is the optimistic one.
    calibration_ : dict or None
        How the chosen head's probabilities were calibrated, measured out of fold (see
        :attr:`EmbeddingClassifier.calibration_ <deepfeat.classify.search.EmbeddingClassifier>`).
    search_ : EmbeddingClassifier
        The fitted search (its ``best_estimator_`` is the head).
    featurizer_spec_ : dict
        The backbone's specification (what a saved model records instead of the network).
    cost_ : dict
        Inference cost of the chosen space: ``forward_passes`` per image, ``ms_per_image``
        (its networks on this machine, no decoding; ``None`` where a part's network was
        never built because every image came from the cache), ``part_ms`` and
        ``measured_on``. Each row of ``selection_["spaces"]`` gives its space's cost too.
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
    A class with a single (readable) image is the usual case with few labels and no error:
    with the default ``cv`` no cross-validated choice is possible, so the first candidate
    space (the backbone's penultimate embedding, or ``layer``) and the fixed default head
    :data:`~deepfeat.classify.search.FALLBACK_PARAMS` (standardized features, logistic
    regression, ``C=1``, no calibration) are fitted untuned
    (:func:`~deepfeat.classify.search.fit_without_cv`); ``best_score_`` and
    ``honest_score_`` are NaN, ``n_splits_`` is 0 and :attr:`selection_` says why. A
    single class is an error. Predicting never changes the fitted state: new
    runtime settings (``cache``, ``device``...) act on a copy of :attr:`embedder_`.

    ``predict``, ``predict_proba``, ``decision_function`` and ``score`` raise
    :class:`~deepfeat.exceptions.InputError` naming any image that cannot be read: they
    cannot return a label for it. :meth:`predict_table` reports such images row by row.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> dark = [rng.integers(0, 60, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    >>> light = [rng.integers(190, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    >>> clf = TransferClassifier(device="cpu", heads="logreg", spaces=None)  # one space: fast
    >>> clf = clf.fit(dark + light, [0] * 4 + [1] * 4)
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
        spaces: str | Sequence[Any] | None = "auto",
        time_budget: float | None = None,
        max_cost: int | None = None,
        max_ms_per_image: float | None = None,
        max_cv_spaces: int = MAX_CV_SPACES,
        heads: str | Sequence[str] = DEFAULT_HEADS,
        preprocessing: str | Sequence[str] = DEFAULT_PREPROCESSING,
        grid: str = "compact",
        param_grid: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        selection: str = "one_se",
        honest: bool = True,
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
        self.spaces = spaces
        self.time_budget = time_budget
        self.max_cost = max_cost
        self.max_ms_per_image = max_ms_per_image
        self.max_cv_spaces = max_cv_spaces
        self.heads = heads
        self.preprocessing = preprocessing
        self.grid = grid
        self.param_grid = param_grid
        self.selection = selection
        self.honest = honest
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a model saved by an earlier deepfeat lacks the parameters added since (e.g.
        # max_cost): they take their defaults, so get_params/set_params keep working
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name != "self" and p.default is not inspect.Parameter.empty:
                state.setdefault(name, p.default)
        super().__setstate__(state)

    # ------------------------------------------------------------------ helpers
    def _embedder_params(self) -> dict[str, Any]:
        p = {k: getattr(self, k) for k in _EMBEDDER_PARAMS}
        p["progress"] = bool(self.verbose)
        return p

    def _runtime_params(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self._embedder_params().items()
            if k not in ("backbone", "layer", "pool", "weights", "checkpoint", "tta")
        }

    def _embed(self, X: Any) -> FeaturizeResult:
        """Embed with the current runtime settings (they may have changed since fit), on a
        copy of :attr:`embedder_`: predicting never changes the fitted state."""
        check_is_fitted(self, "search_")
        return embed(with_runtime(self.embedder_, self._runtime_params()), X,
                     getattr(self, "part_norm_", None))

    def _embeddings(self, X: Any) -> np.ndarray:
        res = self._embed(X)
        if res.failures:
            raise InputError(
                describe_failures(res.failures, len(res.ok))
                + "; predict_table() reports each image's status instead of raising"
            )
        return res.features

    def candidate_spaces(self) -> list[list[dict[str, Any]]]:
        """The candidate spaces ``fit`` chooses among, most preferred first.

        Returns
        -------
        list of list of dict
            Each space as its list of parts (:class:`ImageEmbedder` space parameters).
        """
        own = {"backbone": self.backbone, "layer": self.layer, "pool": self.pool}
        own.update(weights=self.weights, checkpoint=self.checkpoint)
        if self.tta != "none":  # a space's name ignores tta='none'
            own["tta"] = self.tta
        if self.spaces is None:
            return [[own]]
        if isinstance(self.spaces, str):
            if self.spaces != "auto":
                raise InvalidParameterError(f"spaces must be None, 'auto' or a list, got {self.spaces!r}")
            if self._modality() == "text":
                specs = default_text_space_specs(self.backbone, [self.layer] if self.layer else None)
                return self._with_common(specs)
            # the ensemble space brings other backbones with their own pretrained weights:
            # not with random weights or a checkpoint of this backbone
            specs = default_space_specs(
                [self.backbone],
                [self.layer] if self.layer else None,
                ensemble=self.weights == "DEFAULT" and self.checkpoint is None,
            )
        else:
            specs = list(self.spaces)
            if not specs:
                raise InvalidParameterError("spaces: give at least one candidate space")
        return self._with_common(specs)

    def _with_common(self, specs: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Validated parts, each with this estimator's weights and checkpoint (not TF-IDF's:
        it has none); a part that names no backbone is this estimator's."""
        common = {"weights": self.weights, "checkpoint": self.checkpoint}
        out = []
        for spec in specs:
            parts = check_space_spec([{"backbone": self.backbone, **p} for p in space_parts(spec)])
            out.append([p if p.get("backbone") == TFIDF else {**common, **p} for p in parts])
        return out

    def _modality(self) -> str:
        """``"text"`` when ``backbone`` is a text encoder, else ``"image"``."""
        return backbone_modality(self.backbone)

    def _as_items(self, X: Any) -> list[Any]:
        return as_text_list(X) if self._modality() == "text" else as_image_list(X)

    def _check_budget(self) -> None:
        b = self.time_budget
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0):
            raise InvalidParameterError(f"time_budget must be a positive number of seconds or None, got {b!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any) -> TransferClassifier:
        """Embed the images (once per unique image and space), choose space and head.

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
        t_start = time.perf_counter()
        if y is None:
            raise InputError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        self._check_budget()
        check_bounds(self.max_cost, self.max_ms_per_image)
        specs = self.candidate_spaces()
        EmbeddingClassifier(**{k: getattr(self, k) for k in _SEARCH_PARAMS})._check_params()
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        default_cv = self.cv is None or isinstance(self.cv, (int, np.integer))
        no_cv = default_cv and _single_example(y)
        if no_cv:  # the first candidate space, the fixed head: nothing to choose between
            specs = specs[:1]
        items = self._as_items(X)
        if len(items) != len(y):
            raise InputError(f"X holds {len(items)} images but y holds {len(y)} labels")
        deadline = None if self.time_budget is None else t_start + float(self.time_budget)
        distinct = {space_name(p): p for s in specs for p in s}
        # ms per image of each part's network: timed first when bounded by it, else after
        # featurizing for the networks that were built (not for parts read from the cache)
        part_ms = self._part_ms(items, distinct, build=True) if self.max_ms_per_image is not None else {}
        specs, too_big = bounded(specs, self.max_cost, self.max_ms_per_image, part_ms)
        specs, big = without_large_ensembles(specs, len(items))
        too_big += big
        results, skipped = featurize_parts(items, specs, self._runtime_params(), deadline)
        skipped = too_big + skipped
        part_ms.update(self._part_ms(items, {n: distinct[n] for n in results if n not in part_ms}, build=False))
        usable = [s for s in specs if all(space_name(p) in results for p in s)]
        merged = {space_name(s): embed_merge(results, s) for s in usable}
        first = merged[space_name(usable[0])]
        ok = np.logical_and.reduce([m.ok for m in merged.values()])
        self.failures_ = list(first.failures)
        seen = {f["index"] for f in self.failures_}
        for m in merged.values():
            self.failures_ += [f for f in m.failures if f["index"] not in seen]
            seen |= {f["index"] for f in m.failures}
        self.failures_.sort(key=lambda f: f["index"])
        self.featurize_summary_ = _featurize_summary(results)
        if not ok.any():
            raise InputError(describe_failures(self.failures_, len(items)))
        if self.failures_:
            log.warning(
                "%s; they are left out of the fit",
                describe_failures(self.failures_, len(items), limit=len(self.failures_)),
            )
            if default_cv and not no_cv:
                try:
                    no_cv = _single_example(y[ok])
                except InputError as exc:
                    raise InputError(
                        f"after leaving out {len(self.failures_)} unreadable image(s): {exc}"
                    ) from None
        base = EmbeddingClassifier(**{k: getattr(self, k) for k in _SEARCH_PARAMS})
        if no_cv:
            name = space_name(usable[0])
            self.search_ = fit_without_cv(base, merged[name].features[ok], y[ok])
            tried = [{"space": name, "dim": int(merged[name].features.shape[1]),
                      "status": "fixed head: no cross-validation possible"}]
            cands = [{"space": name, **{k: FALLBACK_PARAMS[k] for k in ("preprocess", "head", "C")},
                      "mean_cv_score": float("nan"), "std_cv_score": float("nan")}]
        elif len(merged) == 1:
            name = next(iter(merged))
            self.search_ = base.fit(merged[name].features[ok], y[ok])
            tried = [
                {
                    "space": name,
                    "dim": int(merged[name].features.shape[1]),
                    "status": "cross-validated",
                }
            ]
            cands = [
                {
                    "space": name,
                    **{k: p.get(k) for k in ("preprocess", "head", "C")},
                    **({"gamma_factor": p["gamma_factor"]} if "gamma_factor" in p else {}),
                    "mean_cv_score": round(float(m), 4),
                    "std_cv_score": round(float(sd), 4),
                }
                for p, m, sd in zip(
                    self.search_.cv_results_["params"],
                    self.search_.cv_results_["mean_test_score"],
                    self.search_.cv_results_["std_test_score"],
                )
            ]
        else:
            choice = select_space(
                {n: m.features[ok] for n, m in merged.items()},
                y[ok],
                base,
                max_cv_spaces=self.max_cv_spaces,
                deadline=deadline,
                costs={space_name(s): forward_passes(s) for s in usable},
            )
            name, self.search_ = choice.space, choice.search
            tried, cands = choice.tried, choice.candidates
        for row in tried:
            row.update(space_cost(next(s for s in usable if space_name(s) == row["space"]), part_ms))
        tried += skipped
        # the chosen candidate's row: the rows of a space follow its search's candidates
        mine = [i for i, c in enumerate(cands) if c["space"] == name]
        for i, c in enumerate(cands):
            c["chosen"] = i == mine[self.search_.best_index_]
        chosen = next(s for s in usable if space_name(s) == name)
        self.cost_ = {**space_cost(chosen, part_ms), "part_ms": {space_name(p): part_ms.get(space_name(p))
                                                                for p in chosen}, "measured_on": machine()}
        fitted = [results[space_name(p)]["embedder"] for p in chosen]
        self.embedder_ = (
            fitted[0]
            if len(fitted) == 1
            else FeatureUnion([(space_name(p), e) for p, e in zip(chosen, fitted)])
        )
        self.space_ = name
        self.part_norm_ = PART_NORM
        self.space_spec_ = [dict(p) for p in chosen]
        self.featurizer_spec_ = embedder_parts(self.embedder_)[0].featurizer_spec_
        self.classes_ = self.search_.classes_
        for attr in (
            "best_params_",
            "best_score_",
            "best_std_",
            "cv_results_",
            "n_splits_",
            "honest_score_",
            "calibration_",
        ):
            setattr(self, attr, getattr(self.search_, attr))
        self.selection_ = {
            "chosen": {"space": name, "parts": self.space_spec_, "part_norm": self.part_norm_,
                       "head": dict(self.best_params_)},
            "cv_score_optimistic": self.best_score_,
            "honest_score": self.honest_score_,
            "honest_std": self.search_.honest_std_,
            "cost": self.cost_,
            "spaces": tried,
            "candidates": cands,
            "seconds": time.perf_counter() - t_start,
        }
        if no_cv:
            self.selection_["no_estimate"] = NO_CV_REASON
        return self

    def _part_ms(self, items: list[Any], parts: Mapping[str, Mapping[str, Any]], build: bool) -> dict[str, float]:
        """Milliseconds per image of each part's network (only those already built unless
        ``build``); the featurizers are the ones featurizing uses (shared per process)."""
        runtime = {**self._runtime_params(), "on_error": "nan"}
        out = {}
        for name, p in parts.items():
            f = make_embedder([p], runtime).fit(items).featurizer_
            if f is None:  # a fitted space (TF-IDF): no network, a few microseconds per text
                out[name] = 0.0
            elif build or f.built:
                out[name] = round(time_part(f), 3)
        return out

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

        items = self._as_items(X)
        res = self._embed(items)
        n = len(items)
        text = self._modality() == "text"
        if paths is None and text:
            paths = [t if isinstance(t, str) else f"<{type(t).__name__} #{i}>" for i, t in enumerate(items)]
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
        paths = [
            p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for p in paths
        ]
        ok = res.ok
        if ok.any():
            labels[ok] = self.search_.predict(res.features[ok])
        parts = [pd.DataFrame({"text" if text else "path": paths, "label": labels})]
        if hasattr(self.search_, "predict_proba"):
            proba = np.full((n, len(self.classes_)), np.nan)
            if ok.any():
                proba[ok] = self.search_.predict_proba(res.features[ok])
            # one block for every class at once: a column insert per class fragments the
            # frame (pandas warns from ~100 columns) and costs O(classes^2)
            parts.append(pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes_]))
        parts.append(pd.DataFrame({"status": status}))
        return pd.concat(parts, axis=1)

    @property
    def cv_results_frame_(self) -> Any:
        """:attr:`cv_results_` as a pandas DataFrame, best candidates first."""
        check_is_fitted(self, "search_")
        return results_frame(self.cv_results_)

    def describe(self) -> str:
        """One line naming the backbone, the chosen preprocessing and head, and the CV score."""
        check_is_fitted(self, "search_")
        spec = self.featurizer_spec_
        space = (
            getattr(self, "space_", None) or f"{spec['backbone']} [{spec['layer']}, {spec['pool']}]"
        )
        p = self.best_params_
        extra = "".join(f", {k}={p[k]:.3g}" for k in ("C", "gamma") if k in p)
        score = self.search_.scoring if isinstance(self.search_.scoring, str) else "score"
        honest = getattr(self, "honest_score_", float("nan"))
        if self.n_splits_ == 0:
            return (f"{space} -> {p['preprocess']} -> {p['head']}({extra.lstrip(', ')}); "
                    f"no estimate: {NO_CV_REASON}")
        return (
            f"{space} -> {p['preprocess']} -> {p['head']}"
            f"({extra.lstrip(', ')}); CV {score} {self.best_score_:.4f} +/- {self.best_std_:.4f} "
            f"over {self.n_splits_} folds (optimistic), honest {honest:.4f}"
        )


def without_large_ensembles(
    specs: list[list[dict[str, Any]]], n_images: int
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """``specs`` less the ensembles (spaces of several backbones) above
    :data:`ENSEMBLE_MAX_IMAGES` images, and rows saying which were skipped."""
    if n_images <= ENSEMBLE_MAX_IMAGES or len(specs) < 2:
        return list(specs), []
    big = [s for s in specs[1:] if len({p["backbone"] for p in s}) > 1]
    rows = [{"space": space_name(s), "status": f"skipped: an ensemble, with more than "
             f"{ENSEMBLE_MAX_IMAGES:,} images"} for s in big]
    return [s for s in specs if not any(s is b for b in big)], rows


def _single_example(y: np.ndarray) -> bool:
    """Whether some class of ``y`` has a single example (no stratified folds possible);
    raises :class:`~deepfeat.exceptions.InputError` for fewer than two classes."""
    counts = class_counts(y)
    if len(counts) < 2:
        check_cv_possible(y)  # the error naming the class
    return min(counts.values()) < 2


def embed_merge(results: Mapping[str, Mapping[str, Any]], spec: Sequence[Mapping[str, Any]]):
    """The merged featurize result of the parts of ``spec`` (see :func:`featurize_parts`)."""
    from deepfeat.classify.select_embed import merge_results

    return merge_results([results[space_name(p)]["result"] for p in spec], PART_NORM)


def _featurize_summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    parts = [dict(r["result"].summary) for r in results.values()]
    if len(parts) == 1:
        return parts[0]
    out = {k: parts[0].get(k) for k in ("total", "failed")}
    for k in ("featurized", "cached"):
        out[k] = int(sum(p.get(k, 0) for p in parts))
    out["seconds"] = float(sum(p.get("seconds", 0.0) for p in parts))
    out["parts"] = {name: p for name, p in zip(results, parts)}
    return out
