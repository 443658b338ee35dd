""":class:`ImageEmbedder`: a scikit-learn transformer from images to cached embeddings.

Inside a :class:`~sklearn.model_selection.GridSearchCV` every fold and candidate works
on a ``clone`` of the embedder. Clones are cheap (``__init__`` only stores settings) and
the network runs once per unique image however many clones there are, for two reasons:

* embeddings go to an HDF5 cache keyed by image content (with ``cache=None``, a
  temporary cache created by the first process that needs one and deleted when that
  process exits);
* the :class:`~deepfeat.featurize.Featurizer` built in ``fit`` is shared by every
  estimator of the process with the same feature space and runtime settings, so the
  network is built once too.

Parallel searches (``GridSearchCV(..., n_jobs=2)``, loky or multiprocessing workers)
share the temporary cache too: an ``ImageEmbedder`` with ``cache=None`` carries the path
of its process's temporary cache when it is pickled, and a worker that unpickles it uses
that cache (while its directory exists) instead of making its own. Workers then write
one file under its writer lock (``lock_timeout``), and an image one worker computed is
read, not recomputed, by the others. This holds for embedders pickled by the process
that owns the temporary cache; a :class:`~deepfeat.classify.TransferClassifier` builds
its embedder inside ``fit``, so inside a parallel *outer* search each worker process
featurizes into its own temporary cache unless ``cache`` names a file.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
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

from deepfeat.classify.params import (
    IMAGE_DEFAULTS,
    ON_ERROR,
    RUNTIME_CONSTRAINTS,
    RUNTIME_PARAMS,
    DeclaredParams,
)
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize import DEFAULT_BACKBONE, Featurizer, FeaturizeResult
from deepfeat.featurize.backbones import backbone_modality
from deepfeat.featurize.factory import featurizer_class
from deepfeat.featurize.identity import TTA_CHOICES
from deepfeat.featurize.truncate import POOLINGS

__all__ = ["ImageEmbedder", "as_image_list", "describe_failures", "shared_featurizer"]

#: Settings that define the feature space.
SPACE_PARAMS = ("backbone", "layer", "pool", "weights", "checkpoint", "tta")
_MAX_SHARED = 8

_shared: OrderedDict[tuple, Featurizer] = OrderedDict()
_shared_lock = threading.Lock()
_tmp_cache: dict[str, Any] = {"pid": None, "dir": None}


def _remove_tmp(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in forked children
        shutil.rmtree(path, ignore_errors=True)


def process_cache_path() -> str:
    """Path of this process's temporary feature cache (created on first use, removed at exit)."""
    with _shared_lock:
        if _tmp_cache["pid"] != os.getpid():
            _tmp_cache["dir"] = tempfile.mkdtemp(prefix="deepfeat-embeddings-")
            _tmp_cache["pid"] = os.getpid()
            atexit.register(_remove_tmp, _tmp_cache["dir"], os.getpid())
        return os.path.join(_tmp_cache["dir"], "features.h5")


def _usable_carried(path: str | None) -> str | None:
    """A temporary cache path carried in from another process, if it is still there."""
    if path and os.path.isdir(os.path.dirname(path)):
        return path
    return None


def shared_featurizer(spec: dict[str, Any] | None, params: dict[str, Any]) -> Featurizer:
    """Return the process-wide featurizer for a feature space and runtime settings.

    Parameters
    ----------
    spec : dict or None
        A :attr:`Featurizer.spec <deepfeat.featurize.Featurizer.spec>` to rebuild (a
        fitted or loaded model), or ``None`` to build from ``params``.
    params : dict
        :data:`SPACE_PARAMS` (used when ``spec`` is None) and :data:`RUNTIME_PARAMS`;
        ``cache=None`` means :func:`process_cache_path`.

    Raises
    ------
    UnknownBackboneError, WeightsUnavailableError
        The backbone of ``spec`` cannot be had here (see
        :meth:`Featurizer.from_spec <deepfeat.featurize.Featurizer.from_spec>`).
    """
    cache = params.get("cache")
    runtime = {k: params.get(k, IMAGE_DEFAULTS[k]) for k in RUNTIME_PARAMS}
    runtime["cache"] = process_cache_path() if cache is None else os.fspath(cache)
    runtime["progress"] = bool(runtime["progress"])
    backbone = spec["backbone"] if spec is not None else params.get("backbone", DEFAULT_BACKBONE)
    # this module's Featurizer for images (the name tests and callers may wrap)
    cls = featurizer_class(backbone) if backbone_modality(backbone) == "text" else Featurizer
    accepted = set(inspect.signature(featurizer_class(backbone)).parameters)
    runtime = {k: v for k, v in runtime.items() if k in accepted}  # a text featurizer has no jit
    if spec is None:
        space = {k: params[k] for k in (*SPACE_PARAMS, "max_length") if k in params and k in accepted}
        f = cls(**space, **runtime)
        spec = f.spec
    else:
        f = None
    key = (
        json.dumps(spec, sort_keys=True, default=str),
        json.dumps(runtime, sort_keys=True, default=str),
    )
    with _shared_lock:
        if key in _shared:
            _shared.move_to_end(key)
            return _shared[key]
    if f is None:
        f = cls.from_spec(spec, **runtime)
    with _shared_lock:
        f = _shared.setdefault(key, f)
        _shared.move_to_end(key)
        while len(_shared) > _MAX_SHARED:
            _shared.popitem(last=False)
    return f


def as_image_list(X: Any) -> list[Any]:
    """Turn ``X`` into a list of images, rejecting what cannot be a batch of images.

    Accepted: a sequence (list, tuple, pandas Series, 1-d object array) of paths, PIL
    images or ``HxW``/``HxWxC`` arrays, or one stacked array of shape ``(n, H, W)`` or
    ``(n, H, W, C)``.

    Raises
    ------
    InputError
        A 2-d numeric array (embeddings, not images), sparse input, a single image, or
        no images.

    Examples
    --------
    >>> len(as_image_list(np.zeros((3, 8, 8), np.uint8)))
    3
    """
    if sparse.issparse(X):
        raise InputError("sparse input is not supported: expected a sequence of images")
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise InputError("expected a sequence of images; wrap a single image in a list")
    if isinstance(X, np.ndarray):
        if X.dtype != object and X.dtype.kind not in "US":
            if X.ndim in (3, 4):
                return list(X)
            raise InputError(
                f"expected images (paths, PIL images or a stack of shape (n, H, W[, C])), got a "
                f"{X.ndim}-d numeric array of shape {X.shape}"
                + (
                    "; rows of numbers look like embeddings already: use EmbeddingClassifier"
                    if X.ndim == 2
                    else ""
                )
            )
        items = X.ravel().tolist() if X.ndim == 1 else None
        if items is None:
            raise InputError(f"expected a 1-d array of image paths, got shape {X.shape}")
    else:
        try:
            items = list(X)
        except TypeError:
            raise InputError(f"expected a sequence of images, got {type(X).__name__}") from None
    if not items:
        raise InputError("no images given (0 samples)")
    return items


def describe_failures(failures: Sequence[dict[str, Any]], total: int, limit: int = 5) -> str:
    """One message listing the first ``limit`` failed images and their reasons."""
    head = "; ".join(f"{f['path']}: {f['reason']}" for f in failures[:limit])
    more = f" (and {len(failures) - limit} more)" if len(failures) > limit else ""
    return f"{len(failures)} of {total} images could not be read: {head}{more}"


class CarriedCacheMixin(DeclaredParams):
    """Pickling, runtime settings and parameter checks of the embedders (images and texts).

    The featurizer (a network) is not pickled: it is rebuilt from ``featurizer_spec_``. With
    ``cache=None`` the process's temporary cache is carried to the process that unpickles the
    embedder (a worker of a parallel search), so that every worker fills and reads one cache.
    """

    def _carries_cache(self) -> bool:
        return True

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("featurizer_", None)
        if self.cache is None and self._carries_cache():
            state["_carried_cache"] = _usable_carried(state.get("_carried_cache")) or process_cache_path()
        return state

    def _runtime_params(self) -> dict[str, Any]:
        """``get_params()`` with ``cache=None`` replaced by a temporary cache carried in, if any."""
        params = self.get_params()
        if params["cache"] is None:
            params["cache"] = _usable_carried(getattr(self, "_carried_cache", None))
        return params


class ImageEmbedder(CarriedCacheMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Images in, embeddings out: a truncated pretrained CNN as a scikit-learn transformer.

    Nothing is built in ``__init__``: ``fit`` resolves the backbone and takes the
    process-wide :class:`~deepfeat.featurize.Featurizer` for it (see the module
    docstring); the network itself is built on the first image the cache lacks.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Registry name (see ``deepfeat backbones``).
    layer : str or None, default=None
        Cut point; ``None`` is the penultimate, pooled embedding.
    pool : {"avg", "max", "gem", "avgmax"}, default="avg"
        Pooling of a named layer.
    weights : str or None, default="DEFAULT"
        Pretrained weights, or ``None`` for random (seeded) weights.
    checkpoint : str or None, default=None
        Local state-dict file.
    tta : {"none", "flip"}, default="none"
        ``"flip"``: each embedding is the mean of the image's and its mirror's (a
        feature space of its own).
    cache : str, path-like or None, default=None
        HDF5 feature cache. ``None``: a temporary cache, shared with the worker
        processes of a parallel search (see the module docstring).
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        The resolved precision is part of the feature space.
    jit : bool or "auto", default="auto"
        Traced CPU network (see :class:`~deepfeat.featurize.Featurizer`).
    batch_size : int, default=32
    num_workers : int or "auto", default="auto"
    storage_dtype : {"float32", "float16"}, default="float32"
        Dtype of the rows of a new space in the cache; an existing space keeps its own.
    lock_timeout : float or None, default=30
        Seconds to wait for another process writing the same cache (e.g. the other
        workers of a parallel search); ``None`` waits as long as it takes.
    on_error : {"raise", "nan"}, default="raise"
        An image that cannot be read raises :class:`~deepfeat.exceptions.InputError`
        naming it, or gives a row of NaN.
    progress : bool, default=False
        Progress bar on stderr while featurizing (only on a terminal).

    Attributes
    ----------
    featurizer_ : Featurizer
        The (shared) featurizer; not pickled.
    featurizer_spec_ : dict
        :attr:`Featurizer.spec <deepfeat.featurize.Featurizer.spec>`: what is pickled.

    Examples
    --------
    >>> emb = ImageEmbedder(device="cpu")
    >>> emb.fit_transform(np.zeros((2, 32, 32, 3), np.uint8)).shape
    (2, 1280)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "backbone": [str],
        "layer": [str, None],
        "pool": [StrOptions(set(POOLINGS))],
        "weights": [str, None],
        "checkpoint": [str, os.PathLike, None],
        "tta": [StrOptions(set(TTA_CHOICES))],
        "jit": ["boolean", StrOptions({"auto"})],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        **RUNTIME_CONSTRAINTS,
    }

    def __init__(
        self,
        backbone: str = IMAGE_DEFAULTS["backbone"],
        *,
        layer: str | None = IMAGE_DEFAULTS["layer"],
        pool: str = IMAGE_DEFAULTS["pool"],
        weights: str | None = IMAGE_DEFAULTS["weights"],
        checkpoint: str | None = IMAGE_DEFAULTS["checkpoint"],
        tta: str = IMAGE_DEFAULTS["tta"],
        cache: str | os.PathLike | None = IMAGE_DEFAULTS["cache"],
        device: str = IMAGE_DEFAULTS["device"],
        precision: str = IMAGE_DEFAULTS["precision"],
        jit: bool | str = IMAGE_DEFAULTS["jit"],
        batch_size: int = IMAGE_DEFAULTS["batch_size"],
        num_workers: int | str = IMAGE_DEFAULTS["num_workers"],
        storage_dtype: str = IMAGE_DEFAULTS["storage_dtype"],
        lock_timeout: float | None = IMAGE_DEFAULTS["lock_timeout"],
        on_error: str = ON_ERROR[0],
        progress: bool = IMAGE_DEFAULTS["progress"],
    ) -> None:
        self.backbone = backbone
        self.layer = layer
        self.pool = pool
        self.weights = weights
        self.checkpoint = checkpoint
        self.tta = tta
        self.cache = cache
        self.device = device
        self.precision = precision
        self.jit = jit
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.storage_dtype = storage_dtype
        self.lock_timeout = lock_timeout
        self.on_error = on_error
        self.progress = progress

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # file paths
        tags.transformer_tags.preserves_dtype = []  # always float32 embeddings
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> ImageEmbedder:
        """Resolve the backbone and take its featurizer; nothing is learned from ``X``.

        Parameters
        ----------
        X : sequence of images
        y : ignored

        Returns
        -------
        self
        """
        if backbone_modality(self.backbone) == "text":
            raise InvalidParameterError(
                f"backbone {self.backbone!r} is a text encoder: use TextEmbedder for texts, or an image "
                f"backbone such as {DEFAULT_BACKBONE!r} here"
            )
        as_image_list(X)
        self.featurizer_ = shared_featurizer(None, self._runtime_params())
        self.featurizer_spec_ = self.featurizer_.spec
        return self

    def _featurizer(self) -> Featurizer:
        """The featurizer for the fitted space and the *current* runtime settings."""
        check_is_fitted(self, "featurizer_spec_")
        f = shared_featurizer(self.featurizer_spec_, self._runtime_params())
        return f

    def embed(self, X: Any, *, log_failures: bool = True) -> FeaturizeResult:
        """Featurize ``X`` and return the full result (failures kept, never raised).

        ``log_failures=False``: no warning per unreadable image (the caller reports them).

        Returns
        -------
        FeaturizeResult
            ``features`` (NaN rows for failed images), ``ok``, ``failures``, ``summary``.
        """
        return self._featurizer().featurize(as_image_list(X), log_failures=log_failures)

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of ``X``, one row per image.

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        ndarray of shape (n_images, dim), float32

        Raises
        ------
        InputError
            With ``on_error="raise"``, when some image cannot be read (all are named).
        """
        res = self.embed(X)
        if res.failures and self.on_error == "raise":
            raise InputError(
                describe_failures(res.failures, len(res.ok))
                + "; pass on_error='nan' to get NaN rows"
            )
        return res.features

    @property
    def _n_features_out(self) -> int:
        return self._featurizer().dim
