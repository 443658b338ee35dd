""":class:`FineTuneClassifier`: the second transfer strategy, fine-tuning, as an sklearn estimator."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from deepfeat.classify.cv import check_cv_possible
from deepfeat.classify.embedder import ImageEmbedder, as_image_list, describe_failures
from deepfeat.classify.transfer import TransferClassifier
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.finetune.images import load_pixels
from deepfeat.finetune.network import build_network, save_backbone_checkpoint
from deepfeat.finetune.recipe import RECIPE_FIELDS, Recipe
from deepfeat.finetune.train import fine_tune

__all__ = ["FineTuneClassifier", "default_work_dir", "linear_probe"]

log = logging.getLogger(__name__)

_R = Recipe()


def default_work_dir() -> str:
    """``$DEEPFEAT_FINETUNE_DIR``, else ``$XDG_CACHE_HOME/deepfeat/finetune`` (``~/.cache``)."""
    env = os.environ.get("DEEPFEAT_FINETUNE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "deepfeat", "finetune")


def linear_probe(features: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(n_classes, d)`` and bias of a logistic regression on frozen features.

    The LP of LP-FT: a binary problem's single decision function becomes two symmetric
    logits (``-f/2, +f/2``), whose softmax is the same probability.
    """
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(features, y)
    W, b = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
    if n_classes == 2 and W.shape[0] == 1:
        W, b = np.vstack([-W / 2, W / 2]), np.array([-b[0] / 2, b[0] / 2], np.float32)
    return W, b


class FineTuneClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune the backbone on the labelled images, then search a head on its new embeddings.

    ``fit`` (1) embeds the images with the frozen backbone (through the cache, as
    :class:`~deepfeat.classify.transfer.TransferClassifier` does) and fits a logistic
    regression on them; (2) builds the backbone cut at the same layer plus a new last layer
    initialised from that regression (LP-FT) and fine-tunes it with the recipe below
    (see :class:`~deepfeat.finetune.recipe.Recipe` for each switch); (3) saves the
    fine-tuned backbone as a checkpoint the backbone registry loads; (4) fits a clone of
    ``transfer`` with ``checkpoint=`` that file, so its embeddings are a feature space of
    their own in the cache and the usual head search sits on top. Prediction goes
    through that fitted :attr:`transfer_`, an ordinary deepfeat model.

    Parameters
    ----------
    transfer : TransferClassifier or None, default=None
        The feature space and runtime (its ``embedder``: ``backbone``, ``layer``,
        ``cache``, ``device``...) and head search (its ``search``) to use; ``None`` is
        ``TransferClassifier()`` on images. Its parameters are reachable as
        ``transfer__<name>`` (``transfer__embedder__device``).
    epochs, batch_size, lr, layer_decay, freeze, gradual_unfreeze, warmup_epochs, \
weight_decay, label_smoothing, augment, lp_init, val_fraction, patience, bn, seed
        The fine-tuning recipe; see :class:`~deepfeat.finetune.recipe.Recipe`.
    work_dir : str or None, default=None
        Folder of the per-epoch training state (a rerun with the same data and recipe
        resumes from it) and of the fine-tuned checkpoint, which the fitted model refers
        to: keep it. ``None``: :func:`default_work_dir`.
    verbose : int, default=0
        ``> 0``: progress bars (featurizing, epochs with loss and validation accuracy).

    Attributes
    ----------
    transfer_ : TransferClassifier
        Fitted on the fine-tuned embeddings; what predictions go through.
    checkpoint_ : str
        The fine-tuned backbone's checkpoint file.
    classes_ : ndarray of shape (n_classes,)
    history_ : list of dict
        Per epoch: loss, training and validation accuracy, learning rate, seconds.
    train_summary_ : dict
        ``best_epoch``, ``stopped_early``, ``resumed_from``, ``n_train``, ``n_val``,
        ``seconds``, ``images_per_second``, ``device``, ``precision``.
    featurizer_spec_ : dict
        The fine-tuned feature space (what a saved model records).
    frozen_featurizer_spec_ : dict
        The feature space it started from.
    failures_ : list of dict
        Training images that could not be read (left out).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.integers(0, 60, (40, 40, 3), dtype=np.uint8) for _ in range(4)] + \\
    ...        [rng.integers(190, 255, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    >>> from deepfeat.classify import EmbeddingClassifier, ImageEmbedder
    >>> base = TransferClassifier(ImageEmbedder(device="cpu"), EmbeddingClassifier("logreg"), spaces=None)
    >>> clf = FineTuneClassifier(base, epochs=1, work_dir=tempfile.mkdtemp()).fit(imgs, [0] * 4 + [1] * 4)
    >>> clf.predict(imgs[:1] + imgs[-1:]).tolist()
    [0, 1]
    """

    def __init__(
        self,
        transfer: TransferClassifier | None = None,
        *,
        epochs: int = _R.epochs,
        batch_size: int = _R.batch_size,
        lr: float = _R.lr,
        layer_decay: float = _R.layer_decay,
        freeze: int = _R.freeze,
        gradual_unfreeze: bool = _R.gradual_unfreeze,
        warmup_epochs: int = _R.warmup_epochs,
        weight_decay: float = _R.weight_decay,
        label_smoothing: float = _R.label_smoothing,
        augment: bool = _R.augment,
        lp_init: bool = _R.lp_init,
        val_fraction: float = _R.val_fraction,
        patience: int = _R.patience,
        bn: str = _R.bn,
        seed: int = _R.seed,
        work_dir: str | os.PathLike | None = None,
        verbose: int = 0,
    ) -> None:
        self.transfer = transfer
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.layer_decay = layer_decay
        self.freeze = freeze
        self.gradual_unfreeze = gradual_unfreeze
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.lp_init = lp_init
        self.val_fraction = val_fraction
        self.patience = patience
        self.bn = bn
        self.seed = seed
        self.work_dir = work_dir
        self.verbose = verbose

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # file paths
        return tags

    def recipe(self) -> Recipe:
        """The :class:`Recipe` of the current parameters (validated)."""
        return Recipe(**{k: getattr(self, k) for k in RECIPE_FIELDS})

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any) -> FineTuneClassifier:
        """Fine-tune on ``X, y`` and fit the head search on the fine-tuned embeddings.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or ``HxW[xC]`` arrays.
        y : array-like of shape (n_images,)

        Returns
        -------
        self

        Raises
        ------
        InputError
            Bad recipe values (named), fewer than two classes, no readable image,
            ``X`` and ``y`` of different lengths.
        """
        t_start = time.perf_counter()
        recipe = self.recipe()
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        check_cv_possible(y)  # the head search on the fine-tuned embeddings cross-validates
        items = as_image_list(X)
        if len(items) != len(y):
            raise InputError(f"X holds {len(items)} images but y holds {len(y)} labels")
        base = clone(self.transfer) if self.transfer is not None else TransferClassifier()
        if not isinstance(base, TransferClassifier):
            raise InputError(f"transfer must be a TransferClassifier or None; got {type(base).__name__}")
        emb = base.resolve_embedder("image")
        if not isinstance(emb, ImageEmbedder):
            raise InvalidParameterError(
                f"transfer's embedder is a {type(emb).__name__}: FineTuneClassifier fine-tunes image "
                f"backbones (texts: deepfeat.text_finetune)"
            )

        # 1. frozen features (cached) and the linear probe
        emb = emb.set_params(on_error="nan", progress=bool(self.verbose)).fit(items)
        res = emb.embed(items)
        self.failures_ = list(res.failures)
        if not res.ok.any():
            raise InputError(describe_failures(res.failures, len(items)))
        if res.failures:
            log.warning("%s; they are left out of the fit", describe_failures(res.failures, len(items)))
        ok = np.flatnonzero(res.ok)
        items_ok, y_ok = [items[i] for i in ok], y[ok]
        classes, codes = np.unique(y_ok, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"fine-tuning needs at least two classes; got {len(classes)} ({classes.tolist()})")
        featurizer = emb.featurizer_
        self.frozen_featurizer_spec_ = dict(featurizer.spec)

        # 2. fine-tune (resumable under work_dir)
        identity = _run_identity(featurizer.fingerprint, [res.keys[i] for i in ok], codes, recipe,
                                 featurizer.runtime.describe())
        work = os.path.abspath(os.fspath(self.work_dir) if self.work_dir is not None else default_work_dir())
        os.makedirs(work, exist_ok=True)
        net, template = build_network(featurizer.resolved, featurizer.layer, featurizer.pool, len(classes))
        if recipe.lp_init:
            import torch

            W, b = linear_probe(res.features[ok], codes, len(classes), recipe.seed)
            with torch.no_grad():
                net.head.weight.copy_(torch.from_numpy(W))
                net.head.bias.copy_(torch.from_numpy(b))
        bank = load_pixels(items_ok, featurizer.preprocess, max_pixels=featurizer.max_pixels)
        result = fine_tune(net, bank, codes, recipe, featurizer.runtime,
                           state_path=os.path.join(work, f"{identity}.state.pt"), identity=identity,
                           progress=bool(self.verbose))
        self.checkpoint_ = save_backbone_checkpoint(net, template, os.path.join(work, f"{identity}.backbone.pt"))
        self.history_ = result.history
        self.train_summary_ = {
            "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "resumed_from": result.resumed_from, "epochs_run": len(result.history) - result.resumed_from,
            "n_train": result.n_train, "n_val": result.n_val, "seconds": round(result.seconds, 3),
            "images_per_second": round(result.images_per_second, 2),
            "device": featurizer.runtime.device.type, "precision": featurizer.runtime.precision,
        }
        del net, bank

        # 3. the fine-tuned backbone as a feature space of its own, and the head search on it
        self.transfer_ = clone(base).set_embedder_params(checkpoint=self.checkpoint_)
        if self.verbose:
            self.transfer_.set_params(verbose=self.verbose)
        self.transfer_.fit(items_ok, y_ok)
        self.classes_ = self.transfer_.classes_
        self.featurizer_spec_ = self.transfer_.featurizer_spec_
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    # ------------------------------------------------------------------ predicting
    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each image (through :attr:`transfer_`)."""
        check_is_fitted(self, "transfer_")
        return self.transfer_.predict(X)

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "transfer_")
        return self.transfer_.decision_function(X)

    def _has_proba(self) -> bool:
        if hasattr(self, "transfer_"):
            return hasattr(self.transfer_, "predict_proba")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "transfer_")
        return self.transfer_.predict_proba(X)

    def predict_table(self, X: Any, **kwargs: Any) -> Any:
        """See :meth:`TransferClassifier.predict_table <deepfeat.classify.TransferClassifier.predict_table>`."""
        check_is_fitted(self, "transfer_")
        return self.transfer_.predict_table(X, **kwargs)

    def describe(self) -> str:
        """One line: the fine-tuning run and the head chosen on its embeddings."""
        check_is_fitted(self, "transfer_")
        s = self.train_summary_
        return (f"fine-tuned {s['epochs_run'] + s['resumed_from']} epoch(s) (best {s['best_epoch']}) on "
                f"{s['n_train']} images (+{s['n_val']} validation); {self.transfer_.describe()}")


def _run_identity(fingerprint: str, keys: list[str | None], codes: np.ndarray, recipe: Recipe, runtime: str) -> str:
    blob = json.dumps({"space": fingerprint, "keys": keys, "y": codes.tolist(), "recipe": recipe.to_dict(),
                       "runtime": runtime}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
