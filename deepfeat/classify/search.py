"""The default head search: preprocessing x head x regularisation, chosen by CV, fast.

:class:`EmbeddingClassifier` is a scikit-learn classifier on embedding arrays that picks
its own preprocessing, head and hyperparameters by cross-validation on the data it is
fitted on, then refits the chosen combination on all of it. The default grid is
:data:`deepfeat.classify.candidates.COMPACT_GRID` (few, well-placed values;
``grid="full"`` is the 45-value logistic-regression protocol of Kornblith et al. 2019);
the folds come from :func:`deepfeat.classify.cv.small_data_cv`; the choice follows the
one-standard-error rule and comes with an honest estimate
(:mod:`deepfeat.classify.select_rule`). :func:`build_search` is the factory the
experiments use.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from itertools import product
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from deepfeat.classify.calibration import TemperatureScaledClassifier
from deepfeat.classify.candidates import (
    DEFAULT_HEADS,
    DEFAULT_PREPROCESSING,
    GRIDS,
    check_heads,
    check_preprocessing,
    make_head,
    make_preprocess,
    resolve_grid,
    resolve_heads,
    resolve_preprocessing,
)
from deepfeat.classify.cv import check_cv_possible, class_counts, small_data_cv
from deepfeat.classify.fold_scores import FAST_METRICS, score_fold
from deepfeat.classify.params import DeclaredParams
from deepfeat.classify.select_rule import SELECTIONS, bbc_estimate, choose
from deepfeat.exceptions import InvalidParameterError
from deepfeat.process_state import filters_swapped_inside, ignoring_warnings

__all__ = [
    "EmbeddingClassifier",
    "FALLBACK_PARAMS",
    "NO_CV_REASON",
    "SearchScores",
    "build_search",
    "fit_without_cv",
    "results_frame",
]

log = logging.getLogger(__name__)

#: From this many rows on, ``cv=None`` uses 3 folds instead of 5.
LARGE_ROWS = 2000

#: The untuned head the experiments fit when a class has a single training image (no CV
#: possible); :class:`EmbeddingClassifier` itself refuses such data (see its Notes).
FALLBACK_PARAMS = {"preprocess": "standardize", "head": "logreg", "C": 1.0}
#: Why :func:`fit_without_cv` was used, as summaries say it.
NO_CV_REASON = (
    "a class has a single labelled example: no cross-validation is possible, so the fixed "
    "default head was fitted untuned and no estimate of its accuracy could be made"
)


def results_frame(cv_results: Mapping[str, Any]) -> Any:
    """Return ``cv_results`` as a pandas DataFrame, best candidates first.

    The ``params`` column (one dict per row) is left out: the ``param_*`` columns hold
    the same values.
    """
    import pandas as pd

    df = pd.DataFrame({k: list(v) for k, v in cv_results.items() if k != "params"})
    return df.sort_values(["rank_test_score", "std_test_score"], kind="stable").reset_index(
        drop=True
    )


class SearchScores:
    """Everything the cross-validation of one candidate list produced (see ``_score_all``).

    Attributes
    ----------
    candidates : list of dict
    scores, losses, seconds : ndarray of shape (n_candidates, n_splits)
    predictions : ndarray of int, shape (n_candidates, n_samples)
        Out-of-fold predicted class index of each row (its first validation fold);
        ``-2`` for rows never validated.
    splitter : CV splitter
    """

    def __init__(self, candidates, scores, losses, seconds, predictions, splitter) -> None:
        self.candidates = candidates
        self.scores = scores
        self.losses = losses
        self.seconds = seconds
        self.predictions = predictions
        self.splitter = splitter

    def summary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean score, score spread and mean log-loss of each candidate over the folds."""
        with ignoring_warnings(RuntimeWarning):  # all-NaN rows
            return (
                np.nanmean(self.scores, axis=1),
                np.nanstd(self.scores, axis=1),
                np.nanmean(self.losses, axis=1),
            )

    @staticmethod
    def family(cand: Mapping[str, Any]) -> str:
        """Candidates of one family differ only in ``C`` (their regularisation)."""
        gf = cand.get("gamma_factor")
        return f"{cand['preprocess']}|{cand['head']}" + ("" if gf is None else f"|{gf:.6g}")


class EmbeddingClassifier(DeclaredParams, ClassifierMixin, BaseEstimator):
    """Classifier on embeddings choosing preprocessing, head and regularisation by CV.

    Every combination of a ``preprocessing`` choice, a head and the head's grid values is
    scored by cross-validation. The best mean score is found (ties: lowest validation
    log-loss, then lowest spread over the folds); with ``selection="one_se"`` the most
    strongly regularised candidate of the same preprocessing and head within one standard
    error of it is chosen instead (see :mod:`deepfeat.classify.select_rule`). The choice
    is refitted on all the data. The search shares work between candidates (see
    :mod:`deepfeat.classify.fold_scores`).

    Parameters
    ----------
    heads : str or sequence of str, default="auto"
        Heads to try (a comma-separated string is accepted): ``"logreg"``, ``"linsvm"``,
        ``"rbfsvm"``. ``"auto"``: logistic regression, and the linear SVM when there are
        at most :data:`~deepfeat.classify.candidates.LINSVM_MAX_ROWS` rows and
        :data:`~deepfeat.classify.candidates.LINSVM_MAX_CLASSES` classes.
    preprocessing : str or sequence of str, default="auto"
        Preprocessing choices to try: ``"none"``, ``"l2"``, ``"standardize"``, ``"pca"``,
        ``"pca_whiten"``, or steps chained with ``"+"`` such as ``"l2+standardize"``.
        ``"auto"``: ``"standardize"`` and ``"l2"`` up to
        :data:`~deepfeat.classify.candidates.L2_MAX_ROWS` rows, ``"standardize"`` beyond.
    grid : {"compact", "full"}, default="compact"
        The default values searched (see :mod:`deepfeat.classify.candidates`).
    param_grid : dict or None, default=None
        Overrides of the grid, ``{head: {param: values}}``; parameters are ``C`` for every
        head and ``gamma_factor`` for ``"rbfsvm"`` (a multiple of ``gamma="scale"``).
        ``C`` values given here are used as they are (not relative to the feature scale).
    selection : {"one_se", "best"}, default="one_se"
        The one-standard-error rule, or the best mean score.
    honest : bool, default=True
        Compute :attr:`honest_score_` (bootstrap bias-corrected CV; costs no fits).
    cv : int, CV splitter, iterable or None, default=None
        ``None`` or an int ``k``: :func:`~deepfeat.classify.cv.small_data_cv` with
        ``n_splits=k`` (``None``: 5, or 3 from :data:`LARGE_ROWS` rows on). Anything else
        is used as given.
    scoring : str or callable, default="accuracy"
        A scikit-learn scorer name (e.g. ``"balanced_accuracy"``, ``"f1_macro"``) or
        ``scorer(estimator, X, y)``. Probability-based scorers cannot score SVM
        candidates during the search; those candidates get NaN and are never chosen.
    class_weight : {"balanced"}, dict or None, default=None
        Passed to every head; ``"balanced"`` reweights classes inversely to their size.
    calibrate : bool, default=True
        Calibrate the chosen head's probabilities, whatever the head: a temperature fitted
        on out-of-fold decision values of the search's folds, kept only where it lowers
        their log-loss; predicted labels never change
        (:class:`~deepfeat.classify.calibration.TemperatureScaledClassifier`). ``False``:
        a logistic regression keeps its own probabilities, SVM heads have none.
    max_iter : int, default=200
        Iteration limit of each warm-started logistic-regression fit in the search; the
        final refit, started cold, may use 5 times as many.
    tol : float, default=1e-4
        Tolerance of the logistic-regression fits.
    n_jobs : int or None, default=None
        Splits scored in parallel (joblib).
    random_state : int or None, default=0
        Seeds the default folds, the heads and the bootstrap of the honest estimate.
    verbose : int, default=0
        ``> 0``: report search progress on stderr (a bar on a terminal, else log lines).

    Attributes
    ----------
    best_estimator_ : Pipeline
        ``("preprocess", ...), ("head", ...)`` refitted on all the data.
    best_params_ : dict
        ``preprocess``, ``head``, ``C`` and, for ``"rbfsvm"``, ``gamma`` and ``gamma_factor``.
    best_score_ : float
        Mean cross-validated score of the chosen candidate: **optimistic** (it was chosen
        because it scored well on these folds).
    best_std_ : float
        Standard deviation of that score over the validation folds.
    honest_score_, honest_std_ : float
        Bootstrap bias-corrected CV estimate of the score of the whole selection on
        unseen data, and its bootstrap spread (NaN when ``honest=False`` or the scoring
        is not accuracy or balanced accuracy).
    best_index_ : int
    cv_results_ : dict of ndarray
        Like :class:`~sklearn.model_selection.GridSearchCV`: ``params``, ``param_*``,
        ``split<k>_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time``, and ``mean_val_log_loss`` (the tie-breaker;
        NaN for SVM heads). :attr:`cv_results_frame_` gives a DataFrame.
    n_iter_ : int
        Iterations of the refitted head's solver (the largest, for several sub-problems).
    n_splits_ : int
        Validation folds used.
    search_time_, refit_time_ : float
        Seconds spent in the search and in the final refit (calibration included).
    calibration_ : dict or None
        The chosen head's calibration, measured out of fold: ``temperature``,
        ``log_loss_before``/``_after``, ``ece_before``/``_after`` (see
        :func:`~deepfeat.classify.calibration.fit_temperature`); None with
        ``calibrate=False``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names.

    Notes
    -----
    With the default folds, a class with a single example makes ``fit`` raise
    :class:`~deepfeat.exceptions.InputError` naming it: no cross-validated choice, and no
    honest figure, is possible. :class:`~deepfeat.classify.TransferClassifier` behaves
    the same way. Pass an explicit ``cv`` splitter to search anyway.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = EmbeddingClassifier(heads="logreg").fit(X, y)
    >>> sorted(clf.best_params_), clf.best_score_ > 0.9, clf.honest_score_ > 0.9
    (['C', 'head', 'preprocess'], True, True)
    >>> clf.cv_results_frame_.shape[0]  # 15 C values x (standardize, l2) on 150 rows
    30
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "heads": [str, list, tuple],  # the names: check_heads
        "preprocessing": [str, list, tuple],  # the steps: check_preprocessing
        "grid": [StrOptions(set(GRIDS))],
        "param_grid": [Mapping, None],  # its heads and values: resolve_grid
        "selection": [StrOptions(set(SELECTIONS))],
        "honest": ["boolean"],
        "cv": ["cv_object"],
        "scoring": [str, callable],  # the name: check_scoring
        "class_weight": [StrOptions({"balanced"}), Mapping, None],
        "calibrate": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        heads: str | Sequence[str] = DEFAULT_HEADS,
        *,
        preprocessing: str | Sequence[str] = DEFAULT_PREPROCESSING,
        grid: str = "compact",
        param_grid: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        selection: str = "one_se",
        honest: bool = True,
        cv: Any = None,
        scoring: Any = "accuracy",
        class_weight: Any = None,
        calibrate: bool = True,
        max_iter: int = 200,
        tol: float = 1e-4,
        n_jobs: int | None = None,
        random_state: int | None = 0,
        verbose: int = 0,
    ) -> None:
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
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Check the parameters (:attr:`_parameter_constraints`, then the heads, steps and
        grid overrides named); return the heads and preprocessing choices."""
        self._validate_params()
        heads = check_heads(self.heads)
        preps = check_preprocessing(self.preprocessing)
        resolve_grid(
            [h for h in ("logreg", "linsvm", "rbfsvm") if heads == ("auto",) or h in heads],
            self.param_grid,
            GRIDS[self.grid],
        )
        return heads, preps

    def _candidates(
        self, X: np.ndarray, heads: Sequence[str], preps: Sequence[str], n_classes: int = 2
    ) -> list[dict]:
        heads = resolve_heads(heads, X.shape[0], n_classes)
        grid = resolve_grid(heads, self.param_grid, GRIDS[self.grid])
        overrides = self.param_grid or {}
        cands = []
        for prep in preps:
            with threadpool_limits(limits=1, user_api="blas"):
                Z = make_preprocess(prep, self.random_state).fit_transform(X)
            Z = np.asarray(Z, dtype=np.float64)
            var = float(np.var(Z))
            gamma_scale = 1.0 / (Z.shape[1] * var) if var > 0 else 1.0
            # mean squared row norm per feature: 1 for standardized features, 1/d after l2
            scale = float(np.mean(np.sum(Z * Z, axis=1))) / max(Z.shape[1], 1)
            for head in heads:
                relative = self.grid == "compact" and "C" not in overrides.get(head, {})
                Cs = [c / scale if relative and scale > 0 else c for c in grid[head]["C"]]
                if head == "rbfsvm":
                    for gf, C in product(grid[head]["gamma_factor"], Cs):
                        cands.append(
                            {
                                "preprocess": prep,
                                "head": head,
                                "C": C,
                                "gamma": gf * gamma_scale,
                                "gamma_factor": gf,
                            }
                        )
                else:
                    cands.extend({"preprocess": prep, "head": head, "C": C} for C in Cs)
        return cands

    # ------------------------------------------------------------------ fitting
    def _prepare(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, Any]:
        """Validate, set ``classes_``, and return ``X``, ``y`` and the CV splitter."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise InvalidParameterError(
                f"{type(self).__name__} needs at least 2 classes, got 1 class: {self.classes_.tolist()}"
            )
        default_cv = self.cv is None or isinstance(self.cv, (int, np.integer))
        if default_cv:
            check_cv_possible(y)
            # with many rows 3 folds estimate as well as 5 and cost half (time bound)
            k = (5 if len(y) < LARGE_ROWS else 3) if self.cv is None else int(self.cv)
            splitter = small_data_cv(y, n_splits=k, random_state=self.random_state)
        else:
            splitter = check_cv(self.cv, y, classifier=True)
        return X, y, splitter

    def _score_all(
        self, X: np.ndarray, y: np.ndarray, splitter: Any, label: str = ""
    ) -> SearchScores:
        """Cross-validate every candidate on ``X`` (no choice, no refit); ``label`` names
        the feature space in the progress lines."""
        heads, preps = self._check_params()
        preps = resolve_preprocessing(preps, X.shape[0])
        scorer = check_scoring(self, scoring=self.scoring)
        cands = self._candidates(X, heads, preps, len(np.unique(y)))
        return self._search(X, y, splitter, preps, cands, scorer, label)

    def fit(self, X: Any, y: Any) -> EmbeddingClassifier:
        """Search the grid by cross-validation, then refit the chosen candidate on all data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self

        Raises
        ------
        InputError
            With the default folds: a class with a single example.
        """
        t0 = time.perf_counter()
        X, y, splitter = self._prepare(X, y)
        res = self._score_all(X, y, splitter)
        search_time = time.perf_counter() - t0
        fam = [SearchScores.family(c) for c in res.candidates]
        best = self._choose(res, fam)
        honest = self._honest(res.predictions, y, fam, res.candidates, best)
        return self._finish(X, y, res, best, honest, search_time)

    def _choose(
        self, res: SearchScores, families: Sequence[str], cost: np.ndarray | None = None,
        rank: np.ndarray | None = None,
    ) -> int:
        means, stds, losses = res.summary()
        if res.scores.shape[1] and np.all(np.isnan(means)):
            raise InvalidParameterError(
                f"scoring={self.scoring!r} failed for every candidate; see the logged errors"
            )
        strength = np.array([c["C"] for c in res.candidates], dtype=float)
        return choose(means, stds, losses, res.scores.shape[1], families, strength, self.selection, cost, rank)

    def _honest(
        self,
        predictions: np.ndarray,
        y: np.ndarray,
        families: Sequence[str],
        candidates: Sequence[Mapping[str, Any]],
        best: int,
        cost: np.ndarray | None = None,
        rank: np.ndarray | None = None,
    ) -> dict[str, float]:
        nan = {"score": float("nan"), "std": float("nan"), "n_bootstrap": 0}
        if not self.honest or self.scoring not in FAST_METRICS:
            return nan
        y_idx = np.searchsorted(np.unique(y), y)
        strength = np.array([c["C"] for c in candidates], dtype=float)
        return bbc_estimate(
            predictions,
            y_idx,
            families,
            strength,
            selection=self.selection,
            metric=self.scoring,
            random_state=self.random_state,
            cost=cost,
            rank=rank,
        )

    def _finish(
        self,
        X: np.ndarray,
        y: np.ndarray,
        res: SearchScores,
        best: int,
        honest: Mapping[str, float],
        search_time: float,
    ) -> EmbeddingClassifier:
        """Set the fitted attributes from ``res`` and refit candidate ``best`` on all data."""
        self.search_time_ = search_time
        self.n_splits_ = res.scores.shape[1]
        self.cv_results_ = self._results(res.candidates, res.scores, res.losses, res.seconds)
        self.best_index_ = int(best)
        self.best_params_ = dict(self.cv_results_["params"][self.best_index_])
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_std_ = float(self.cv_results_["std_test_score"][self.best_index_])
        self.honest_score_ = float(honest["score"])
        self.honest_std_ = float(honest["std"])
        t0 = time.perf_counter()
        self.best_estimator_ = self._refit(X, y, self.best_params_, res.splitter)
        self.refit_time_ = time.perf_counter() - t0
        head = self.best_estimator_[-1]
        self.calibration_ = getattr(head, "calibration_", None) if self.calibrate else None
        head = getattr(head, "estimator_", head)
        self.n_iter_ = int(np.max(getattr(head, "n_iter_", 0)))
        log.info(
            "refit %s (of this space's %d candidates x %d folds): %s %.4f +/- %.4f (optimistic), "
            "honest %.4f (search %.1f s, refit %.1f s)",
            self.best_params_,
            len(res.candidates),
            self.n_splits_,
            self.scoring if isinstance(self.scoring, str) else "score",
            self.best_score_,
            self.best_std_,
            self.honest_score_,
            self.search_time_,
            self.refit_time_,
        )
        return self

    def _search(self, X, y, splitter, preps, cands, scorer, label: str = "") -> SearchScores:
        splits = list(splitter.split(X, y))
        by_prep = {p: [i for i, c in enumerate(cands) if c["preprocess"] == p] for p in preps}
        tasks = [(p, k) for p in preps for k in range(len(splits))]
        jobs = (
            delayed(score_fold)(
                X,
                y,
                splits[k][0],
                splits[k][1],
                p,
                [cands[i] for i in by_prep[p]],
                scorer,
                metric=self.scoring if self.scoring in FAST_METRICS else None,
                class_weight=self.class_weight,
                max_iter=self.max_iter,
                tol=self.tol,
                random_state=self.random_state,
            )
            for p, k in tasks
        )
        scores = np.full((len(cands), len(splits)), np.nan)
        losses = np.full((len(cands), len(splits)), np.nan)
        seconds = np.zeros((len(cands), len(splits)))
        oof = np.full((len(cands), len(y)), -2, dtype=np.int32)
        first_fold = np.full(len(y), -1)
        for k in range(len(splits) - 1, -1, -1):
            first_fold[splits[k][1]] = k
        errors: list[str] = []
        bar = self._progress(len(tasks), label)
        results = Parallel(n_jobs=self.n_jobs, return_as="generator")(jobs)
        for done, ((p, k), (s, loss, sec, err, pred)) in enumerate(zip(tasks, results), 1):
            rows = np.asarray(by_prep[p])
            scores[rows, k] = s
            losses[rows, k] = loss
            seconds[rows, k] = sec
            test = np.asarray(splits[k][1])
            mine = first_fold[test] == k
            oof[np.ix_(rows, test[mine])] = pred[:, mine]
            errors.extend(err)
            if bar is not None:
                bar.update(1)
            elif self.verbose:
                log.info(
                    "search%s: %d/%d (preprocessing x fold) done, %d candidates",
                    f" of {label}" if label else "",
                    done,
                    len(tasks),
                    len(cands),
                )
        if bar is not None:
            bar.close()
        if errors:
            log.warning("%d candidate fits could not be scored, e.g. %s", len(errors), errors[0])
        return SearchScores(cands, scores, losses, seconds, oof, splitter)

    def _progress(self, total: int, label: str = "") -> Any:
        if not (self.verbose and sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

        desc = f"search {label}" if label else "search"
        return tqdm(total=total, desc=desc, unit="fold", file=sys.stderr, leave=False)

    @staticmethod
    def _results(
        cands: list[dict], scores: np.ndarray, losses: np.ndarray, seconds: np.ndarray
    ) -> dict[str, Any]:
        n = len(cands)
        res: dict[str, Any] = {"params": [dict(c) for c in cands]}
        for key in ("space", "preprocess", "head", "C", "gamma", "gamma_factor"):
            if key == "space" and not any("space" in c for c in cands):
                continue
            col = np.empty(n, dtype=object)
            col[:] = [c.get(key) for c in cands]
            res[f"param_{key}"] = col
        for k in range(scores.shape[1]):
            res[f"split{k}_test_score"] = scores[:, k]
        with ignoring_warnings(RuntimeWarning):  # all-NaN rows
            means = np.nanmean(scores, axis=1) if scores.shape[1] else np.full(n, np.nan)
            stds = np.nanstd(scores, axis=1) if scores.shape[1] else np.full(n, np.nan)
            mean_loss = np.nanmean(losses, axis=1) if losses.shape[1] else np.full(n, np.nan)
        res["mean_test_score"] = means
        res["std_test_score"] = stds
        res["mean_val_log_loss"] = mean_loss
        ranks = np.empty(n, dtype=np.int32)
        key = -np.nan_to_num(means, nan=-np.inf)
        for i in range(n):
            ranks[i] = 1 + int(np.sum(key < key[i]))
        res["rank_test_score"] = ranks
        res["mean_fit_time"] = seconds.mean(axis=1) if seconds.shape[1] else np.zeros(n)
        return res

    def _refit(self, X: np.ndarray, y: np.ndarray, params: dict, splitter: Any) -> Pipeline:
        head = make_head(
            params["head"],
            params,
            class_weight=self.class_weight,
            max_iter=5 * self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )
        if self.calibrate and splitter is not None:  # None: no folds to fit a temperature on
            head = TemperatureScaledClassifier(head, cv=splitter, random_state=self.random_state)
        pipe = Pipeline(
            [
                ("preprocess", make_preprocess(params["preprocess"], self.random_state)),
                ("head", head),
            ]
        )
        with (
            threadpool_limits(limits=1, user_api="blas"),
            ignoring_warnings(ConvergenceWarning) as caught,
        ):
            pipe.fit(X, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.info(
                "the refit of %s stopped at max_iter=%d before full convergence",
                params,
                5 * self.max_iter,
            )
        return pipe

    # ------------------------------------------------------------------ predicting
    # scikit-learn's input validation swaps the warnings filters on every call (check_array
    # turns ComplexWarning into an error inside catch_warnings): a model shared by threads
    # takes turns here, so those swaps never interleave (the head is milliseconds of work).
    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each row of ``X``."""
        with filters_swapped_inside():
            X = self._check_X(X)
            return self.best_estimator_.predict(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values of the chosen head (shape ``(n,)`` for two classes)."""
        with filters_swapped_inside():
            X = self._check_X(X)
            return self.best_estimator_.decision_function(X)

    def _has_proba(self) -> bool:
        if hasattr(self, "best_estimator_"):
            return hasattr(self.best_estimator_, "predict_proba")
        try:
            return bool(self.calibrate) or set(check_heads(self.heads)) == {"logreg"}
        except ValueError:
            return True

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in :attr:`classes_` order."""
        with filters_swapped_inside():
            X = self._check_X(X)
            return self.best_estimator_.predict_proba(X)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with filters_swapped_inside():
            X = self._check_X(X)
            return self.best_estimator_.predict_log_proba(X)

    @property
    def cv_results_frame_(self) -> Any:
        """:attr:`cv_results_` as a pandas DataFrame, best candidates first."""
        check_is_fitted(self)
        return results_frame(self.cv_results_)


def fit_without_cv(search: EmbeddingClassifier, X: Any, y: Any) -> EmbeddingClassifier:
    """Fit ``search``'s fitted attributes to the fixed head :data:`FALLBACK_PARAMS`, untuned.

    For labels no cross-validation can split (a class with a single example): the head
    is fitted on all rows, with ``class_weight`` and ``random_state`` of ``search`` and
    no probability calibration (there are no folds to fit a temperature on). Scores that
    need folds are NaN, ``n_splits_`` is 0 and ``cv_results_`` holds the one candidate.

    Returns
    -------
    EmbeddingClassifier
        ``search`` itself, fitted: it predicts, saves, serves and exports as after ``fit``.

    Examples
    --------
    >>> clf = fit_without_cv(EmbeddingClassifier(), [[0.0], [1.0], [2.0]], ["a", "b", "b"])
    >>> clf.predict([[0.1], [1.9]]).tolist(), clf.n_splits_, clf.best_params_["head"]
    (['a', 'b'], 0, 'logreg')
    """
    search._check_params()
    X, y = validate_data(search, X, y, dtype=np.float64)
    check_classification_targets(y)
    search.classes_ = np.unique(y)
    if len(search.classes_) < 2:
        raise InvalidParameterError(
            f"{type(search).__name__} needs at least 2 classes, got 1 class: {search.classes_.tolist()}"
        )
    t0 = time.perf_counter()
    params = dict(FALLBACK_PARAMS)
    empty = np.zeros((1, 0))
    search.search_time_ = 0.0
    search.n_splits_ = 0
    search.cv_results_ = search._results([params], empty, empty, empty)
    search.best_index_ = 0
    search.best_params_ = params
    search.best_score_ = search.best_std_ = float("nan")
    search.honest_score_ = search.honest_std_ = float("nan")
    search.best_estimator_ = search._refit(X, y, params, None)  # no folds: no calibration
    search.calibration_ = None
    search.refit_time_ = time.perf_counter() - t0
    head = search.best_estimator_[-1]
    search.n_iter_ = int(np.max(getattr(head, "n_iter_", 0)))
    log.info("%s; fitted %s", NO_CV_REASON, params)
    return search


def build_search(
    heads: str | Sequence[str] | None = None,
    *,
    cv: Any = None,
    scoring: Any = "accuracy",
    class_weight: Any = None,
    n_jobs: int | None = None,
    random_state: int | None = 0,
    y: Any = None,
) -> EmbeddingClassifier:
    """Return deepfeat's default hyperparameter search as an unfitted estimator on arrays.

    Parameters
    ----------
    heads : str, sequence of str or None, default=None
        ``None``: ``"auto"`` (see :class:`EmbeddingClassifier`).
    cv : int, CV splitter, iterable or None, default=None
        ``None``: folds from :func:`~deepfeat.classify.cv.small_data_cv`, drawn from
        ``y`` here when given, else from the labels passed to ``fit``.
    scoring : str or callable, default="accuracy"
    class_weight : {"balanced"}, dict or None, default=None
    n_jobs : int or None, default=None
    random_state : int or None, default=0
    y : array-like or None, default=None
        Labels the search will be fitted on; used to choose the folds now. When some
        class has a single example the folds are left to ``fit``, which then raises
        (see :class:`EmbeddingClassifier`).

    Returns
    -------
    EmbeddingClassifier

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((6, 2)), np.ones((6, 2))] + np.arange(12)[:, None] * 0.01
    >>> y = np.r_[np.zeros(6), np.ones(6)]
    >>> search = build_search(["logreg"], y=y)
    >>> type(search.cv).__name__
    'RepeatedStratifiedKFold'
    >>> search.fit(X, y).predict([[0.9, 0.9]]).tolist()
    [1.0]
    """
    if (
        cv is None
        and y is not None
        and min(class_counts(y).values(), default=0) >= 2
        and len(class_counts(y)) >= 2
    ):
        cv = small_data_cv(y, random_state=random_state)
    return EmbeddingClassifier(
        DEFAULT_HEADS if heads is None else heads,
        cv=cv,
        scoring=scoring,
        class_weight=class_weight,
        n_jobs=n_jobs,
        random_state=random_state,
    )
