""":class:`ContrastiveTextClassifier`: contrastive fine-tuning of a sentence encoder, then a head."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from deepfeat.exceptions import InputError, InvalidParameterError, WeightsUnavailableError
from deepfeat.process_state import torch_single_threaded
from deepfeat.text_finetune.encoder import SentenceEncoder, default_model_dir
from deepfeat.text_finetune.train import train_contrastive

__all__ = ["ContrastiveTextClassifier", "as_text_list", "auto_steps"]

log = logging.getLogger(__name__)

_ENCODER_LOCK = threading.Lock()


def as_text_list(X: Any, name: str = "X") -> list[str]:
    """``X`` as a list of non-empty strings, or an :class:`InputError` naming the first bad row.

    Accepts a list, tuple, 1-d array or pandas Series of ``str``.
    """
    if isinstance(X, str):
        raise InputError(f"{name} must be a sequence of texts, not a single string")
    arr = np.asarray(X, dtype=object) if not hasattr(X, "to_numpy") else X.to_numpy(dtype=object)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-d sequence of texts (str); got an array of shape {arr.shape}")
    if len(arr) == 0:
        raise InputError(f"{name} holds no texts")
    texts = arr.tolist()
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{name}[{i}] is not a text: {type(t).__name__} {t!r:.60}")
        if not t.strip():
            raise InputError(f"{name}[{i}] is empty or whitespace only")
    return texts


def auto_steps(n_texts: int, batch_size: int) -> int:
    """Four passes over ``n_texts`` in batches of ``batch_size``, clipped to ``[10, 200]`` steps.

    Examples
    --------
    >>> auto_steps(16, 16), auto_steps(128, 16), auto_steps(10_000, 16)
    (10, 32, 200)
    """
    return int(np.clip(4 * -(-n_texts // batch_size), 10, 200))


class ContrastiveTextClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a sentence encoder on pairs of the labelled texts, then fit a head on it.

    ``fit`` (1) loads the sentence encoder from ``model`` (a local directory, no network);
    (2) trains it for ``steps`` steps on class-balanced batches of ``batch_size`` texts, every
    pair inside a batch scored with SetFit's cosine-similarity loss, positive and negative
    pairs weighted equally (see :mod:`deepfeat.text_finetune.train`); (3) fits ``head`` on
    the tuned, L2-normalised, mean-pooled embeddings. Blocks below ``freeze`` (block 0: the
    token embeddings) are not trained.

    Parameters
    ----------
    model : str or None, default=None
        A local Hugging Face sentence-encoder directory; ``None``: the offline
        all-MiniLM-L6-v2 (:func:`~deepfeat.text_finetune.default_model_dir`).
    steps : int or "auto", default="auto"
        Optimisation steps; ``"auto"``: four passes over the training texts, at least 10 and
        at most 200 steps (:func:`auto_steps`).
    batch_size : int, default=16
        Texts per step (all pairs among them are scored).
    lr : float, default=1e-4
        Peak learning rate of AdamW (linear warm-up, then linear decay to 0).
    warmup : float, default=0.1
        Fraction of the steps spent warming up.
    weight_decay : float, default=0.01
    freeze : int, default=1
        Blocks left untrained, from the bottom: 0 trains everything, 1 freezes the token
        embeddings (half of MiniLM's weights), ``1 + i`` also the first ``i`` layers.
    max_length : int, default=256
        Tokens per text at most; longer texts are cut (counted in ``n_truncated_``).
    head : classifier or None, default=None
        Fitted (a clone) on the tuned embeddings; ``None``: ``LogisticRegression(max_iter=1000)``.
    seed : int, default=0
        Seeds the batches, the dropout and the head: a fit is reproducible.
    checkpoint_dir : str or None, default=None
        Folder where the training state (trained weights, optimizer, step, sampler seed) is
        written every ``checkpoint_every`` steps, atomically; a fit with the same data and
        parameters started again after a kill resumes from it. ``None``: no state is written.
    checkpoint_every : int, default=10
    single_threaded : bool, default=True
        Run torch on one thread inside ``fit`` and ``predict`` (restored afterwards); ``False``
        leaves torch's thread count as the caller set it.
    chunk : int, default=8
        Texts per forward pass inside a step: the batch is sorted by length and cut into
        chunks, each padded to its own longest text (half the padded tokens of one pass over
        16 short sentences); the loss still sees the whole batch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    head_ : classifier
        Fitted on the tuned embeddings of the training texts.
    encoder_state_ : dict of str to ndarray
        The trained parameters (float32); the frozen ones are the base model's.
    model_dir_ : str
        The encoder directory the tuned weights apply to.
    model_digest_ : str
        SHA-256 of its weights: a loaded model refuses a directory whose weights differ.
    max_length_ : int
    n_truncated_ : int
        Training texts cut to ``max_length``.
    losses_ : list of float
        Training loss per step.
    train_summary_ : dict
        ``steps``, ``resumed_from``, ``steps_run``, ``seconds``, ``texts_per_second``, ``n_train``.
    fit_seconds_ : float

    Notes
    -----
    Saving with joblib/pickle stores the trained parameters inside the estimator and refers
    to the untrained base by directory and content hash (the frozen embeddings are not
    copied); the encoder is rebuilt on the first prediction after loading.

    Examples
    --------
    >>> texts = ["great food", "loved it", "wonderful staff", "really good",
    ...          "awful food", "hated it", "rude staff", "really bad"]
    >>> clf = ContrastiveTextClassifier(steps=2).fit(texts, [1] * 4 + [0] * 4)
    >>> clf.predict(["so good", "so bad"]).tolist()
    [1, 0]
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        steps: int | str = "auto",
        batch_size: int = 16,
        lr: float = 1e-4,
        warmup: float = 0.1,
        weight_decay: float = 0.01,
        freeze: int = 1,
        max_length: int = 256,
        head: Any = None,
        seed: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        single_threaded: bool = True,
        chunk: int = 8,
    ) -> None:
        self.model = model
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.warmup = warmup
        self.weight_decay = weight_decay
        self.freeze = freeze
        self.max_length = max_length
        self.head = head
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.single_threaded = single_threaded
        self.chunk = chunk

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InvalidParameterError(f"{name} must be an integer >= {low}; got {v!r}")

        if not (isinstance(self.steps, str) and self.steps == "auto"):
            v = self.steps
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InvalidParameterError(f'steps must be "auto" or an integer >= 0; got {v!r}')
        for name, low in (("batch_size", 2), ("freeze", 0), ("max_length", 3),
                          ("checkpoint_every", 1), ("chunk", 1)):
            integer(name, low)
        for name, lo, hi in (("lr", 0.0, 1.0), ("warmup", 0.0, 1.0), ("weight_decay", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise InvalidParameterError(f"{name} must be a number in [{lo}, {hi}]; got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InvalidParameterError(f"seed must be an integer; got {self.seed!r}")

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        with torch_single_threaded() if self.single_threaded else contextlib.nullcontext():
            yield

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any) -> ContrastiveTextClassifier:
        """Tune the encoder on ``X, y`` and fit the head on the tuned embeddings.

        Parameters
        ----------
        X : sequence of str
        y : array-like of shape (n_texts,)

        Returns
        -------
        self

        Raises
        ------
        InputError
            ``X`` not a sequence of non-empty texts (the first bad row named), ``X`` and ``y``
            of different lengths, fewer than two classes.
        InvalidParameterError
            A parameter out of its range (named).
        """
        t_start = time.perf_counter()
        self._check_params()
        texts = as_text_list(X)
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        if len(texts) != len(y):
            raise InputError(f"X holds {len(texts)} texts but y holds {len(y)} labels")
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"fine-tuning needs at least two classes; got {len(classes)} ({classes.tolist()})")

        model_dir = os.path.abspath(os.fspath(self.model)) if self.model is not None else default_model_dir()
        with self._threads():
            enc = SentenceEncoder(model_dir, self.max_length)
            if self.freeze > enc.n_layers + 1:
                raise InvalidParameterError(
                    f"freeze must be at most {enc.n_layers + 1} for this encoder "
                    f"({enc.n_layers} layers + embeddings); got {self.freeze}"
                )
            ids, cut = enc.tokenize(texts)
            state_path = None
            identity = self._identity(enc.digest, texts, codes)
            if self.checkpoint_dir is not None:
                os.makedirs(self.checkpoint_dir, exist_ok=True)
                state_path = os.path.join(os.fspath(self.checkpoint_dir), f"{identity}.state.pt")
            result = train_contrastive(
                enc, ids, codes, steps=self._steps(len(texts)), batch_size=self.batch_size, lr=self.lr,
                warmup=self.warmup, weight_decay=self.weight_decay, freeze=self.freeze,
                seed=self.seed, chunk=self.chunk, state_path=state_path, identity=identity,
                checkpoint_every=self.checkpoint_every,
            )
            emb = enc.embed(ids)
        names = set(enc.trainable_names(self.freeze))
        self.encoder_state_ = {n: p.detach().numpy().copy() for n, p in enc.model.named_parameters()
                               if n in names}
        self.model_dir_, self.model_digest_, self.max_length_ = model_dir, enc.digest, self.max_length
        self.n_truncated_ = cut
        if cut:
            log.warning("%d of %d training texts were longer than max_length=%d tokens and were cut",
                        cut, len(texts), self.max_length)
        head = self._head()
        self.head_ = head.fit(emb, y)
        self.classes_ = self.head_.classes_
        self.losses_ = result.losses
        self.train_summary_ = {
            "steps": self._steps(len(texts)), "resumed_from": result.resumed_from, "steps_run": result.steps_run,
            "seconds": round(result.seconds, 3), "texts_per_second": round(result.texts_per_second, 2),
            "n_train": len(texts),
        }
        self._encoder = enc
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _steps(self, n: int) -> int:
        return auto_steps(n, self.batch_size) if self.steps == "auto" else int(self.steps)

    def _head(self) -> Any:
        if self.head is None:
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(max_iter=1000, random_state=self.seed)
        head = clone(self.head)
        if "random_state" in head.get_params(deep=False) and head.get_params()["random_state"] is None:
            head.set_params(random_state=self.seed)
        return head

    def _identity(self, digest: str, texts: list[str], codes: np.ndarray) -> str:
        h = hashlib.sha256()
        for t in texts:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
        keys = ("steps", "batch_size", "lr", "warmup", "weight_decay", "freeze", "max_length", "seed", "chunk")
        blob = json.dumps({"model": digest, "texts": h.hexdigest(), "y": codes.tolist(),
                           "params": {k: getattr(self, k) for k in keys}}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    # ------------------------------------------------------------------ the tuned encoder
    def _tuned_encoder(self) -> SentenceEncoder:
        enc = getattr(self, "_encoder", None)
        if enc is not None:
            return enc
        with _ENCODER_LOCK:
            enc = getattr(self, "_encoder", None)
            if enc is None:
                import torch

                enc = SentenceEncoder(self.model_dir_, self.max_length_)
                if enc.digest != self.model_digest_:
                    raise WeightsUnavailableError(
                        f"the encoder in {self.model_dir_!r} is not the one this model was tuned from "
                        f"(weights sha256 {enc.digest[:12]}..., expected {self.model_digest_[:12]}...)"
                    )
                state = {n: torch.from_numpy(a) for n, a in self.encoder_state_.items()}
                missing = set(state) - {n for n, _ in enc.model.named_parameters()}
                if missing:
                    raise WeightsUnavailableError(f"tuned parameters not in the encoder: {sorted(missing)[:3]}")
                enc.model.load_state_dict(state, strict=False)
                enc.model.eval()
                for p in enc.model.parameters():
                    p.requires_grad_(False)
                self._encoder = enc
        return enc

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_encoder", None)  # rebuilt from model_dir_ + encoder_state_ when needed
        return state

    def transform(self, X: Any) -> np.ndarray:
        """The tuned, L2-normalised embeddings ``(n_texts, d)`` of ``X``."""
        check_is_fitted(self, "head_")
        texts = as_text_list(X)
        with self._threads():
            enc = self._tuned_encoder()
            ids, cut = enc.tokenize(texts)
            if cut:
                log.warning("%d of %d texts were longer than max_length=%d tokens and were cut",
                            cut, len(texts), self.max_length_)
            return enc.embed(ids)

    # ------------------------------------------------------------------ predicting
    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each text."""
        emb = self.transform(X)
        return self.head_.predict(emb)

    def _head_has(name: str) -> Any:  # noqa: N805 - a predicate for available_if
        def check(self: ContrastiveTextClassifier) -> bool:
            return hasattr(self.head_ if hasattr(self, "head_") else self._head(), name)
        return check

    @available_if(_head_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_texts, n_classes)``, columns in the order of ``classes_``."""
        emb = self.transform(X)
        return self.head_.predict_proba(emb)

    @available_if(_head_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """The head's decision function on the tuned embeddings."""
        emb = self.transform(X)
        return self.head_.decision_function(emb)
