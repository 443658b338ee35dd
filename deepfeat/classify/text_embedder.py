""":class:`TextEmbedder`: a scikit-learn transformer from texts to cached embeddings.

The text counterpart of :class:`~deepfeat.classify.embedder.ImageEmbedder`, with the same
contract: ``__init__`` only stores settings, ``fit`` takes the process-wide
:class:`~deepfeat.featurize.text_featurizer.TextFeaturizer` of the feature space (shared
by every clone, so a search encodes each text once), ``transform`` returns float32 rows.

``backbone="tfidf"`` is the TF-IDF baseline space (1-2-grams, sublinear tf): unlike the
encoders it is *fitted* on the texts given to ``fit`` (vocabulary and idf; no labels are
used) and kept in :attr:`vectorizer_`; its rows are computed, not cached.
"""

from __future__ import annotations

import hashlib
import os
from numbers import Integral
from typing import Any

import numpy as np
from PIL import Image
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from deepfeat.classify.embedder import (
    CarriedCacheMixin,
    describe_failures,
    shared_featurizer,
)
from deepfeat.classify.params import ON_ERROR, RUNTIME_CONSTRAINTS, TEXT_DEFAULTS
from deepfeat.exceptions import InputError
from deepfeat.featurize.featurizer import FeaturizeResult
from deepfeat.featurize.text_encoders import TEXT_POOLINGS, TFIDF
from deepfeat.featurize.text_featurizer import describe_text, text_problem

__all__ = ["TextEmbedder", "as_text_list", "TFIDF_PARAMS"]

#: The TF-IDF baseline space (what the issue's baseline measured: 1-2-gram TF-IDF).
TFIDF_PARAMS = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 1, "dtype": np.float32}


def as_text_list(X: Any) -> list[Any]:
    """Turn ``X`` into a list of texts, rejecting what cannot be a batch of texts.

    Accepted: a sequence (list, tuple, pandas Series, 1-d array) of strings. Items that
    are empty or not strings are kept (they fail one by one); images and numeric arrays
    are refused at once.

    Raises
    ------
    InputError
        Images, a numeric array, sparse input, a single string, or no texts.

    Examples
    --------
    >>> as_text_list(np.array(["good", "bad"]))
    ['good', 'bad']
    """
    if sparse.issparse(X):
        raise InputError("sparse input is not supported: expected a sequence of texts")
    if isinstance(X, str):
        raise InputError("expected a sequence of texts; wrap a single text in a list")
    if isinstance(X, np.ndarray):
        if X.dtype.kind not in "OUS":
            raise InputError(
                f"expected texts, got a numeric array of shape {X.shape}: images need an image backbone "
                f"(e.g. 'efficientnet_lite0'), embeddings an EmbeddingClassifier"
            )
        if X.ndim != 1:
            raise InputError(f"expected a 1-d sequence of texts, got an array of shape {X.shape}")
        items = X.tolist()
    else:
        try:
            items = list(X)
        except TypeError:
            raise InputError(f"expected a sequence of texts, got {type(X).__name__}") from None
    if not items:
        raise InputError("no texts given (0 samples)")
    first_image = next((x for x in items if isinstance(x, (Image.Image, np.ndarray, bytes, os.PathLike))), None)
    if first_image is not None:
        raise InputError(
            f"expected texts, got {type(first_image).__name__}: a text backbone reads strings; images "
            f"need an image backbone (e.g. 'efficientnet_lite0')"
        )
    return items


class TextEmbedder(CarriedCacheMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Texts in, embeddings out: a pretrained sentence encoder (or TF-IDF) as a transformer.

    Parameters
    ----------
    backbone : str, default="minilm"
        ``"minilm"`` (offline all-MiniLM-L6-v2), ``"hf:<repo>"`` (online) or ``"tfidf"``
        (fitted 1-2-gram TF-IDF).
    layer : str or None, default=None
        Cut point of an encoder (``"embeddings"``, ``"encoder.layer.<k>"``); ``None``: last.
    pool : {"mean", "cls"}, default="mean"
        Pooling of the token states (``"avg"`` reads as ``"mean"``).
    weights : str or None, default="DEFAULT"
        Pretrained weights, or ``None`` for random (seeded) weights.
    checkpoint : str or None, default=None
        Local state-dict file of the encoder.
    max_length : int or None, default=None
        Window in tokens (``None``: the encoder's). Longer texts are truncated and counted.
    cache : str, path-like or None, default=None
        HDF5 feature cache; ``None``: this process's temporary cache.
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
    batch_size : int, default=32
    storage_dtype : {"float32", "float16"}, default="float32"
    lock_timeout : float or None, default=30
    on_error : {"raise", "nan"}, default="raise"
        An empty text raises :class:`~deepfeat.exceptions.InputError` naming it, or gives
        a row of NaN.
    progress : bool, default=False

    Attributes
    ----------
    featurizer_ : TextFeaturizer or None
        The (shared) featurizer; ``None`` for TF-IDF. Not pickled.
    featurizer_spec_ : dict
        The feature space (what is pickled).
    vectorizer_ : TfidfVectorizer
        Only for ``backbone="tfidf"``.

    Examples
    --------
    >>> emb = TextEmbedder(device="cpu", precision="fp32")
    >>> emb.fit_transform(["a good phone", "it broke"]).shape
    (2, 384)
    >>> TextEmbedder("tfidf").fit_transform(["a good phone", "it broke"]).shape
    (2, 6)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "backbone": [str],
        "layer": [str, None],
        "pool": [StrOptions({*TEXT_POOLINGS, "avg"})],
        "weights": [str, None],
        "checkpoint": [str, os.PathLike, None],
        "max_length": [Interval(Integral, 1, None, closed="left"), None],
        **RUNTIME_CONSTRAINTS,
    }

    def __init__(
        self,
        backbone: str = TEXT_DEFAULTS["backbone"],
        *,
        layer: str | None = TEXT_DEFAULTS["layer"],
        pool: str = TEXT_DEFAULTS["pool"],
        weights: str | None = TEXT_DEFAULTS["weights"],
        checkpoint: str | None = TEXT_DEFAULTS["checkpoint"],
        max_length: int | None = TEXT_DEFAULTS["max_length"],
        cache: str | os.PathLike | None = TEXT_DEFAULTS["cache"],
        device: str = TEXT_DEFAULTS["device"],
        precision: str = TEXT_DEFAULTS["precision"],
        batch_size: int = TEXT_DEFAULTS["batch_size"],
        storage_dtype: str = TEXT_DEFAULTS["storage_dtype"],
        lock_timeout: float | None = TEXT_DEFAULTS["lock_timeout"],
        on_error: str = ON_ERROR[0],
        progress: bool = TEXT_DEFAULTS["progress"],
    ) -> None:
        self.backbone = backbone
        self.layer = layer
        self.pool = pool
        self.weights = weights
        self.checkpoint = checkpoint
        self.max_length = max_length
        self.cache = cache
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.storage_dtype = storage_dtype
        self.lock_timeout = lock_timeout
        self.on_error = on_error
        self.progress = progress

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags

    def _carries_cache(self) -> bool:
        return self.backbone != TFIDF  # TF-IDF is fitted, never cached

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> TextEmbedder:
        """Take the encoder's featurizer (nothing learned), or fit TF-IDF on ``X``.

        Parameters
        ----------
        X : sequence of str
        y : ignored

        Returns
        -------
        self
        """
        items = as_text_list(X)
        if self.backbone == TFIDF:
            from sklearn.feature_extraction.text import TfidfVectorizer

            good = [t for t in items if not text_problem(t)]
            if not good:
                raise InputError("no usable text to fit TF-IDF on (all empty)")
            self.vectorizer_ = TfidfVectorizer(**TFIDF_PARAMS).fit(good)
            vocab = sorted(self.vectorizer_.vocabulary_)
            digest = hashlib.sha256("\n".join(vocab).encode("utf-8", "surrogatepass"))
            digest.update(np.asarray(self.vectorizer_.idf_, np.float32).tobytes())
            self.featurizer_ = None
            self.featurizer_spec_ = {
                "modality": "text", "backbone": TFIDF, "layer": "1-2-grams", "pool": "tfidf",
                "weights_id": f"fitted:{digest.hexdigest()[:16]}", "dim": len(vocab),
                "fingerprint": f"tfidf-{digest.hexdigest()[:16]}",
            }
            return self
        self.featurizer_ = shared_featurizer(None, self._runtime_params())
        self.featurizer_spec_ = self.featurizer_.spec
        return self

    def embed(self, X: Any, *, log_failures: bool = True) -> FeaturizeResult:
        """Featurize ``X`` and return the full result (failures kept, never raised)."""
        check_is_fitted(self, "featurizer_spec_")
        items = as_text_list(X)
        if self.backbone != TFIDF:
            f = shared_featurizer(self.featurizer_spec_, self._runtime_params())
            return f.featurize(items, log_failures=log_failures)
        reasons = [text_problem(t) for t in items]
        ok = np.array([not r for r in reasons])
        feats = np.full((len(items), len(self.vectorizer_.vocabulary_)), np.nan, np.float32)
        if ok.any():
            feats[ok] = self.vectorizer_.transform([t for t, g in zip(items, ok) if g]).toarray()
        fails = [{"index": i, "path": f"row {i}: {describe_text(items[i])}", "reason": r}
                 for i, r in enumerate(reasons) if r]
        summary = {"total": len(items), "featurized": int(ok.sum()), "cached": 0, "failed": len(fails),
                   "truncated": 0, "seconds": 0.0, "fingerprint": self.featurizer_spec_["fingerprint"]}
        return FeaturizeResult(feats, ok, [None] * len(items), fails, summary)

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of ``X``, one row per text.

        Parameters
        ----------
        X : sequence of str

        Returns
        -------
        ndarray of shape (n_texts, dim), float32

        Raises
        ------
        InputError
            With ``on_error="raise"``, when some text is empty (all are named).
        """
        res = self.embed(X)
        if res.failures and self.on_error == "raise":
            raise InputError(
                describe_failures(res.failures, len(res.ok)).replace("images", "texts")
                + "; pass on_error='nan' to get NaN rows"
            )
        return res.features

    @property
    def _n_features_out(self) -> int:
        check_is_fitted(self, "featurizer_spec_")
        if self.backbone == TFIDF:
            return len(self.vectorizer_.vocabulary_)
        return shared_featurizer(self.featurizer_spec_, self._runtime_params()).dim
