""":class:`TransferClassifier`: images and labels in, a tuned classifier on cached embeddings out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.pipeline import FeatureUnion
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from deepfeat.classify.cost import (
    bounded,
    forward_passes,
    machine,
    space_cost,
    time_part,
)
from deepfeat.classify.cv import check_cv_possible, class_counts
from deepfeat.classify.embedder import ImageEmbedder, as_image_list, describe_failures
from deepfeat.classify.modality import embedder_class, embedder_modality, input_modality
from deepfeat.classify.params import RUNTIME_PARAMS, DeclaredParams, check_params
from deepfeat.classify.search import (
    FALLBACK_PARAMS,
    NO_CV_REASON,
    EmbeddingClassifier,
    fit_without_cv,
    results_frame,
)
from deepfeat.classify.select_space import MAX_CV_SPACES, select_space
from deepfeat.classify.space_embedders import (
    embed,
    embedder_parts,
    featurize_parts,
    make_embedder,
    with_runtime,
)
from deepfeat.classify.spaces import (
    ORDERED_MODALITIES,
    PART_NORM,
    check_space_spec,
    default_space_specs,
    default_text_space_specs,
    space_name,
    space_parts,
)
from deepfeat.classify.text_embedder import TextEmbedder, as_text_list
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize import FeaturizeResult
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


class TransferClassifier(DeclaredParams, ClassifierMixin, BaseEstimator):
    """Transfer learning in one estimator: pretrained embeddings + a searched head.

    ``fit`` embeds the inputs with ``embedder`` (only those its cache lacks go through the
    network), in each candidate feature space, then fits a clone of ``search``, which
    chooses preprocessing, head and regularisation by cross-validation (and, among several
    spaces, the space) and refits the best on all inputs.

    The estimator composes the two it drives, as scikit-learn's meta-estimators do: their
    parameters are theirs (``embedder__device``, ``search__cv``; ``get_params(deep=True)``
    lists them), and ``fit`` works on clones, never changing them.

    Parameters
    ----------
    embedder : ImageEmbedder, TextEmbedder, str or None, default=None
        The feature space and how to compute it (``backbone``, ``layer``, ``pool``,
        ``weights``, ``checkpoint``, ``cache``, ``device``...). ``None``: the default
        embedder of the inputs given to ``fit`` (:class:`~deepfeat.classify.ImageEmbedder`
        for images, :class:`~deepfeat.classify.TextEmbedder` for texts, told apart by
        :func:`~deepfeat.classify.modality.input_modality`). A backbone name is short for
        that backbone's embedder with its defaults (``"minilm"``:
        ``TextEmbedder("minilm")``). Runtime settings (``cache``, ``device``,
        ``precision``, ``batch_size``...) may be changed after fitting, e.g. to predict
        on another machine: :meth:`set_embedder_params`. With a text embedder ``X`` is a
        sequence of strings and ``spaces="auto"`` searches
        :func:`~deepfeat.classify.spaces.default_text_space_specs`.
    search : EmbeddingClassifier or None, default=None
        The head search (``heads``, ``preprocessing``, ``grid``, ``cv``, ``scoring``,
        ``calibrate``, ``random_state``...); ``None``: ``EmbeddingClassifier()``.
    spaces : "auto", None or list of space specs, default="auto"
        ``"auto"`` (what ``deepfeat fit`` does, whose defaults are these):
        :func:`~deepfeat.classify.spaces.default_space_specs` of the embedder's backbone
        (its penultimate embedding, a late cut point, their concatenation, flip-averaged
        embeddings where the embedder offers them, and the offline zoo's ensemble space
        with the default pretrained weights; with a ``layer`` given, that cut point in
        place of the late one). ``None``: only the embedder's own space (one
        featurization per input: the fastest fit). A list: these candidates (each a dict
        of embedder space parameters, or a list of such dicts to concatenate; a part
        that names no backbone is the embedder's). The space and the head are chosen
        together by :func:`~deepfeat.classify.select_space.select_space`.
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
    verbose : int, default=0
        ``> 0``: progress of featurizing and of the search on stderr (whatever the
        ``progress`` and ``verbose`` of ``embedder`` and ``search``).

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
    >>> from deepfeat.classify import EmbeddingClassifier, ImageEmbedder
    >>> clf = TransferClassifier(ImageEmbedder(device="cpu"), EmbeddingClassifier("logreg"),
    ...                          spaces=None)  # one space: fast
    >>> clf = clf.fit(dark + light, [0] * 4 + [1] * 4)
    >>> clf.predict(dark[:1] + light[:1]).tolist()
    [0, 1]
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "embedder": [ImageEmbedder, TextEmbedder, str, None],
        "search": [EmbeddingClassifier, None],
        "spaces": [StrOptions({"auto"}), list, tuple, None],
        "time_budget": [Interval(Real, 0, None, closed="neither"), None],
        "max_cost": [Interval(Integral, 1, None, closed="left"), None],
        "max_ms_per_image": [Interval(Real, 0, None, closed="neither"), None],
        "max_cv_spaces": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        embedder: ImageEmbedder | TextEmbedder | str | None = None,
        search: EmbeddingClassifier | None = None,
        *,
        spaces: str | Sequence[Any] | None = "auto",
        time_budget: float | None = None,
        max_cost: int | None = None,
        max_ms_per_image: float | None = None,
        max_cv_spaces: int = MAX_CV_SPACES,
        verbose: int = 0,
    ) -> None:
        self.embedder = embedder
        self.search = search
        self.spaces = spaces
        self.time_budget = time_budget
        self.max_cost = max_cost
        self.max_ms_per_image = max_ms_per_image
        self.max_cv_spaces = max_cv_spaces
        self.verbose = verbose

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # file paths, texts
        return tags

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(upgrade_state(state))

    # ------------------------------------------------------------------ the parts
    def resolve_embedder(self, modality: str | None = None) -> ImageEmbedder | TextEmbedder:
        """The unfitted embedder ``fit`` starts from (a new object: ``embedder`` is untouched).

        Parameters
        ----------
        modality : {"image", "text"} or None, default=None
            What the inputs are, for ``embedder=None``; ``None``: what this model was
            fitted on, else images.

        Returns
        -------
        ImageEmbedder or TextEmbedder
            A clone of ``embedder``; the embedder of a backbone name; the default
            embedder of ``modality`` for ``None``.
        """
        e = self.embedder
        if isinstance(e, str):
            return embedder_class(e)(e)
        if e is not None:
            return clone(e)
        return TextEmbedder() if (modality or self._modality()) == "text" else ImageEmbedder()

    def set_embedder_params(self, **params: Any) -> TransferClassifier:
        """``set_params(embedder__<name>=value)`` whatever ``embedder`` is.

        With ``embedder`` None or a backbone name, ``embedder`` first becomes
        :meth:`resolve_embedder` (for a fitted model: the embedder of what it was fitted
        on). Settings the embedder does not have (``jit`` for a text embedder) are left out.
        On a fitted model, runtime settings (``cache``, ``device``, ``precision``,
        ``batch_size``...) act on the next predictions; the fitted state is unchanged.

        Returns
        -------
        self
        """
        if self.embedder is None or isinstance(self.embedder, str):
            self.embedder = self.resolve_embedder()
        known = self.embedder.get_params(deep=False)
        self.embedder.set_params(**{k: v for k, v in params.items() if k in known})
        return self

    def _search(self) -> EmbeddingClassifier:
        search = clone(self.search) if self.search is not None else EmbeddingClassifier()
        if self.verbose:
            search.set_params(verbose=max(int(search.verbose), int(self.verbose)))
        return search

    def _runtime_params(self) -> dict[str, Any]:
        """The runtime settings predictions use: ``embedder``'s, or (``embedder`` None or a
        backbone name) those the model was fitted with; progress as ``verbose`` asks."""
        e = self.embedder
        params = {} if e is None or isinstance(e, str) else {
            k: v for k, v in e.get_params(deep=False).items() if k in RUNTIME_PARAMS
        }
        params["progress"] = bool(params.get("progress")) or bool(self.verbose)
        return params

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

    def candidate_spaces(self, X: Any = None) -> list[list[dict[str, Any]]]:
        """The candidate spaces ``fit`` chooses among, most preferred first.

        Parameters
        ----------
        X : sequence of images or texts, or None, default=None
            Inputs that tell the default embedder's modality (``embedder=None``);
            ``None``: images, unless the model was fitted on texts.

        Returns
        -------
        list of list of dict
            Each space as its list of parts (embedder space parameters).
        """
        modality = None if X is None else self._fit_modality(X)
        return self._candidate_spaces(self.resolve_embedder(modality))

    def _candidate_spaces(self, emb: ImageEmbedder | TextEmbedder) -> list[list[dict[str, Any]]]:
        p = emb.get_params(deep=False)
        text = isinstance(emb, TextEmbedder)
        own = {k: p[k] for k in ("backbone", "layer", "pool", "weights", "checkpoint")}
        if not text and p["tta"] != "none":  # a space's name ignores tta='none'
            own["tta"] = p["tta"]
        if text and p["max_length"] is not None:
            own["max_length"] = p["max_length"]
        if self.spaces is None:
            return [[own]]
        if isinstance(self.spaces, str):
            if self.spaces != "auto":
                raise InvalidParameterError(f"spaces must be None, 'auto' or a list, got {self.spaces!r}")
            if text:
                specs = default_text_space_specs(p["backbone"], [p["layer"]] if p["layer"] else None)
                return self._with_common(specs, own)
            # the ensemble space brings other backbones with their own pretrained weights:
            # not with random weights or a checkpoint of this backbone
            specs = default_space_specs(
                [p["backbone"]],
                [p["layer"]] if p["layer"] else None,
                ensemble=p["weights"] == "DEFAULT" and p["checkpoint"] is None,
            )
        else:
            specs = list(self.spaces)
            if not specs:
                raise InvalidParameterError("spaces: give at least one candidate space")
        return self._with_common(specs, own)

    @staticmethod
    def _with_common(specs: Sequence[Any], own: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
        """Validated parts, each with the embedder's weights and checkpoint (not TF-IDF's:
        it has none); a part that names no backbone is the embedder's."""
        common = {"weights": own["weights"], "checkpoint": own["checkpoint"]}
        out = []
        for spec in specs:
            parts = check_space_spec([{"backbone": own["backbone"], **p} for p in space_parts(spec)])
            out.append([p if p.get("backbone") == TFIDF else {**common, **p} for p in parts])
        return out

    def _modality(self) -> str:
        """``"text"`` or ``"image"``: what the fitted model reads, else what ``embedder`` reads
        (images for ``embedder=None``)."""
        spec = getattr(self, "featurizer_spec_", None)
        if spec is not None:
            return backbone_modality(spec["backbone"])
        return "image" if self.embedder is None else embedder_modality(self.embedder)

    def _fit_modality(self, X: Any) -> str:
        """What ``fit`` reads: what ``embedder`` reads, or (``None``) what ``X`` holds."""
        if self.embedder is not None:
            return embedder_modality(self.embedder)
        if (isinstance(X, np.ndarray) and X.dtype.kind not in "OUS") or sparse.issparse(X) \
                or isinstance(X, (str, os.PathLike)):
            return "image"  # the image reader names what is wrong with it
        try:
            return input_modality(list(X))
        except TypeError:
            return "image"

    def _as_items(self, X: Any, modality: str | None = None) -> list[Any]:
        return as_text_list(X) if (modality or self._modality()) == "text" else as_image_list(X)

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=False)
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
        if not hasattr(X, "__len__") and hasattr(X, "__iter__"):
            X = list(X)  # a generator: read once
        modality = self._fit_modality(X)
        emb = self.resolve_embedder(modality)
        if self.verbose:
            emb.set_params(progress=True)
        check_params(emb)
        runtime = {k: v for k, v in emb.get_params(deep=False).items() if k in RUNTIME_PARAMS}
        base = self._search()
        base._check_params()
        specs = self._candidate_spaces(emb)
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        default_cv = base.cv is None or isinstance(base.cv, (int, np.integer))
        no_cv = default_cv and _single_example(y)
        if no_cv:  # the first candidate space, the fixed head: nothing to choose between
            specs = specs[:1]
        items = self._as_items(X, modality)
        if len(items) != len(y):
            what = "texts" if modality == "text" else "images"
            raise InputError(f"X holds {len(items)} {what} but y holds {len(y)} labels")
        deadline = None if self.time_budget is None else t_start + float(self.time_budget)
        distinct = {space_name(p): p for s in specs for p in s}
        # ms per image of each part's network: timed first when bounded by it, else after
        # featurizing for the networks that were built (not for parts read from the cache)
        part_ms = self._part_ms(items, distinct, runtime, build=True) if self.max_ms_per_image is not None else {}
        specs, too_big = bounded(specs, self.max_cost, self.max_ms_per_image, part_ms)
        specs, big = without_large_ensembles(specs, len(items))
        too_big += big
        results, skipped = featurize_parts(items, specs, runtime, deadline)
        skipped = too_big + skipped
        part_ms.update(self._part_ms(items, {n: distinct[n] for n in results if n not in part_ms}, runtime,
                                     build=False))
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
                ordered=modality in ORDERED_MODALITIES,
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

    @staticmethod
    def _part_ms(items: list[Any], parts: Mapping[str, Mapping[str, Any]], runtime: Mapping[str, Any],
                 build: bool) -> dict[str, float]:
        """Milliseconds per image of each part's network (only those already built unless
        ``build``); the featurizers are the ones featurizing uses (shared per process)."""
        runtime = {**runtime, "on_error": "nan"}
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
        return (self.search if self.search is not None else EmbeddingClassifier())._has_proba()

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
    from deepfeat.classify.space_embedders import merge_results

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


#: The parameters a TransferClassifier took before it composed an embedder and a search:
#: a model saved then has them as attributes, moved into its parts on loading.
_FLAT_EMBEDDER = (
    "backbone", "layer", "pool", "weights", "checkpoint", "cache", "device", "precision", "batch_size",
    "num_workers", "tta", "jit", "storage_dtype", "lock_timeout",
)
_FLAT_SEARCH = (
    "heads", "preprocessing", "grid", "param_grid", "selection", "honest", "cv", "scoring", "class_weight",
    "calibrate", "n_jobs", "random_state",
)


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """The pickled state of a :class:`TransferClassifier`, in this version's layout.

    A model saved before the estimator composed an embedder and a search (every parameter
    its own attribute) gets an ``embedder`` and a ``search`` holding those parameters, so
    it predicts as it did and refits to the same choice; parameters added since take
    their defaults.
    """
    import inspect

    state = dict(state)
    if "embedder" not in state:
        flat = {k: state.pop(k) for k in _FLAT_EMBEDDER if k in state}
        search = {k: state.pop(k) for k in _FLAT_SEARCH if k in state}
        if flat:
            cls = embedder_class(flat.get("backbone", ImageEmbedder().backbone))
            known = set(inspect.signature(cls).parameters)
            state["embedder"] = cls(**{k: v for k, v in flat.items() if k in known})
        state["search"] = EmbeddingClassifier(**search) if search else None
    for name, p in inspect.signature(TransferClassifier).parameters.items():
        if p.default is not inspect.Parameter.empty:
            state.setdefault(name, p.default)
    return state
