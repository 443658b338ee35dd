"""Save and load fitted models: joblib for your own files, skops for files you receive.

What a model file holds
    The fitted scikit-learn head and the backbone's *specification*
    (:attr:`Featurizer.spec <deepfeat.featurize.Featurizer.spec>`: registry name, weights
    identifier, layer, pooling, preprocessing), never the torch network. Loading
    rebuilds the backbone from the specification, so the file is small and loading
    fails with a clear :class:`~deepfeat.exceptions.UnknownBackboneError` or
    :class:`~deepfeat.exceptions.WeightsUnavailableError` when this machine cannot
    provide the same feature space (unknown name, other weights, missing checkpoint).

Two formats, one trade-off
    ``.joblib`` (also ``.pkl``) is pickle: complete and fast, but *loading a pickle runs
    whatever code the file says*. A pickle is therefore only loaded without asking when
    this machine wrote it: :func:`save` records each file's SHA-256 in a local trust
    list (``$DEEPFEAT_TRUST_STORE``, default ``~/.local/share/deepfeat/trusted-models.txt``),
    and :func:`load` refuses any other pickle (a downloaded one, or one modified since it
    was saved) unless called with ``trusted=True`` (CLI: ``--trust``).

    ``.skops`` (:mod:`skops.io`, ``pip install deepfeat[safe]``) stores objects as data
    and rebuilds only types on an allow-list: scikit-learn and numpy types (skops's own
    list), deepfeat's estimators and CV splitters (:data:`TRUSTED_TYPES`). Any other type in the file
    is refused by name unless you pass it in ``trusted``. Use it to share models.
    Slower to write and read than joblib, and custom estimators must be allow-listed.

The feature cache is a runtime option
    :func:`save` records a model's ``cache`` as an absolute path (a relative one is
    resolved against the current folder); :func:`load` keeps it only while that file
    exists, so predicting from another folder or machine never creates a cache nobody
    named there: the model uses a temporary cache until
    ``set_embedder_params(cache=...)`` names one.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepfeat.exceptions import DeepfeatError, InputError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TRUSTED_TYPES",
    "save",
    "load",
    "trust_store_path",
    "featurizer_specs",
]

log = logging.getLogger(__name__)

FORMAT = "deepfeat-model"
FORMAT_VERSION = 1
SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: Types a ``.skops`` file may contain without being named in ``trusted``, beyond
#: skops's defaults: deepfeat's estimators and the (data-only) CV splitters they keep.
TRUSTED_TYPES = (
    "deepfeat.classify.transfer.TransferClassifier",
    "deepfeat.classify.embedder.ImageEmbedder",
    "deepfeat.classify.text_embedder.TextEmbedder",
    "deepfeat.classify.search.EmbeddingClassifier",
    "deepfeat.classify.calibration.TemperatureScaledClassifier",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.model_selection._split.RepeatedStratifiedKFold",
    "sklearn.model_selection._split._CVIterableWrapper",
)


def trust_store_path() -> Path:
    """The file listing SHA-256 digests of the pickles this machine saved."""
    env = os.environ.get("DEEPFEAT_TRUST_STORE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "deepfeat" / "trusted-models.txt"


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remember(path: str) -> None:
    store = trust_store_path()
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        with open(store, "a", encoding="utf-8") as fh:
            fh.write(f"{_sha256(path)}  {os.path.abspath(path)}\n")
    except OSError as exc:
        log.warning(
            "could not record %s in the trust list %s (%s); loading it will need trusted=True",
            path,
            store,
            exc,
        )


def _is_remembered(digest: str) -> bool:
    try:
        with open(trust_store_path(), encoding="utf-8") as fh:
            return any(line.split(" ", 1)[0] == digest for line in fh)
    except OSError:
        return False


def _walk(obj: Any, depth: int = 0) -> Iterator[Any]:
    yield obj
    if depth > 6:
        return
    for attr in ("embedder_", "best_estimator_", "estimator_"):
        sub = getattr(obj, attr, None)
        if sub is not None:
            yield from _walk(sub, depth + 1)
    for _, step in getattr(obj, "steps", []) or []:
        yield from _walk(step, depth + 1)
    for _, part in getattr(obj, "transformer_list", []) or []:  # a concatenated space
        yield from _walk(part, depth + 1)


def featurizer_specs(model: Any) -> list[dict[str, Any]]:
    """The backbone specifications inside ``model`` (a TransferClassifier, an
    ImageEmbedder, or a Pipeline/search holding one); empty for array-level models."""
    specs = []
    for obj in _walk(model):
        spec = getattr(obj, "featurizer_spec_", None)
        if isinstance(spec, dict) and spec not in specs:
            specs.append(spec)
    return specs


def _versions() -> dict[str, str]:
    import sklearn

    from deepfeat import __version__

    return {"deepfeat": __version__, "sklearn": sklearn.__version__}


def save(model: Any, path: str | os.PathLike, *, compress: int = 3) -> str:
    """Save a fitted model; the format follows the suffix (``.joblib``/``.pkl`` or ``.skops``).

    Parameters
    ----------
    model : estimator
        Typically a fitted :class:`~deepfeat.classify.transfer.TransferClassifier`.
    path : path
    compress : int, default=3
        joblib compression level.

    Returns
    -------
    str
        The path written (atomically: a crash leaves no half-written file).

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.linear_model import LogisticRegression
    >>> path = os.path.join(tempfile.mkdtemp(), "m.skops")
    >>> _ = save(LogisticRegression().fit([[0], [1]], [0, 1]), path)
    >>> load(path).predict([[1]]).tolist()
    [1]
    """
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix not in SKOPS_SUFFIXES + PICKLE_SUFFIXES:
        raise InputError(f"{path}: model files end in .joblib, .pkl or .skops")
    model = _absolute_cache(model)
    envelope = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "featurizer_specs": featurizer_specs(model),
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        if suffix in SKOPS_SUFFIXES:
            _skops().dump(envelope, tmp)
        else:
            import joblib

            joblib.dump(envelope, tmp, compress=compress)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if suffix in PICKLE_SUFFIXES:
        _remember(path)
    return path


def _cache_owner(model: Any) -> Any:
    """The object whose ``cache`` setting ``model`` uses: its ``embedder`` (a
    TransferClassifier's), the model itself, or None."""
    emb = getattr(model, "embedder", None)
    if hasattr(emb, "cache"):
        return emb
    return model if hasattr(model, "cache") else None


def _with_cache(model: Any, cache: str | None) -> Any:
    """A shallow copy of ``model`` whose cache setting is ``cache``."""
    out = copy.copy(model)
    if _cache_owner(model) is model:
        out.cache = cache
    else:
        out.embedder = copy.copy(model.embedder)
        out.embedder.cache = cache
    return out


def _absolute_cache(model: Any) -> Any:
    """``model``, or a shallow copy whose relative ``cache`` path is made absolute.

    A saved model must not depend on the folder it is loaded from: a relative cache path
    would be read, or created, against whichever folder ``predict`` runs in. The path is
    resolved against the current folder, as the model would have resolved it now.
    """
    cache = getattr(_cache_owner(model), "cache", None)
    if not isinstance(cache, (str, os.PathLike)) or os.path.isabs(cache):
        return model
    return _with_cache(model, os.path.abspath(cache))


def _drop_missing_cache(model: Any, path: str) -> None:
    """Forget a saved cache path that is relative or gone: a call must not create it.

    The loaded model then uses a temporary cache until ``set_embedder_params(cache=...)``
    names one.
    """
    owner = _cache_owner(model)
    cache = getattr(owner, "cache", None)
    if not isinstance(cache, (str, os.PathLike)):
        return
    if os.path.isabs(cache) and os.path.exists(cache):
        return
    log.info(
        "%s: its cache %s is %s; using a temporary cache (set_embedder_params(cache=...) or --cache "
        "to choose one)", path, os.fspath(cache),
        "gone" if os.path.isabs(cache) else "a relative path",
    )
    owner.cache = None


def _skops() -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise InputError(".skops model files need skops: pip install 'deepfeat[safe]'") from None
    return sio


def load(
    path: str | os.PathLike,
    *,
    trusted: bool | Sequence[str] = False,
    check_backbone: bool = True,
    return_info: bool = False,
) -> Any:
    """Load a model written by :func:`save` (see the module docstring on trust).

    Parameters
    ----------
    path : path
    trusted : bool or sequence of str, default=False
        ``.joblib``/``.pkl``: ``True`` loads a pickle this machine did not write (it can
        run arbitrary code: only for files from a source you trust). ``.skops``: type
        names to allow beyond :data:`TRUSTED_TYPES` and skops's defaults, or ``True`` for
        all types in the file.
    check_backbone : bool, default=True
        Resolve the model's backbone now, so a missing one fails here, clearly.
    return_info : bool, default=False
        Also return what the file records about the model: ``created`` (UTC, ISO 8601)
        and ``versions`` (of deepfeat and scikit-learn that saved it).

    Returns
    -------
    estimator, or (estimator, dict) with ``return_info=True``

    Raises
    ------
    InputError
        Not a deepfeat model file, an untrusted pickle, or disallowed types in a
        ``.skops`` file (all named).
    UnknownBackboneError, WeightsUnavailableError
        The backbone the model was trained on cannot be had on this machine.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such model file")
    suffix = Path(path).suffix.lower()
    if suffix in SKOPS_SUFFIXES:
        envelope = _load_skops(path, trusted)
    elif suffix in PICKLE_SUFFIXES:
        envelope = _load_pickle(path, trusted)
    else:
        raise InputError(f"{path}: model files end in .joblib, .pkl or .skops")
    if not (isinstance(envelope, dict) and envelope.get("format") == FORMAT):
        raise InputError(
            f"{path}: not a deepfeat model file (write one with deepfeat.classify.save)"
        )
    if envelope.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path}: model format version {envelope.get('format_version')!r}; this deepfeat reads {FORMAT_VERSION}"
        )
    saved, now = envelope.get("versions", {}), _versions()
    if saved.get("sklearn") != now["sklearn"]:
        log.warning(
            "%s was saved with scikit-learn %s, this is %s: predictions may differ",
            path,
            saved.get("sklearn"),
            now["sklearn"],
        )
    model = envelope["model"]
    _drop_missing_cache(model, path)
    if check_backbone:
        _check_backbones(model, path)
    if return_info:
        return model, {"created": envelope.get("created"), "versions": dict(saved)}
    return model


def _load_pickle(path: str, trusted: bool | Sequence[str]) -> Any:
    import joblib

    if trusted is not True and not _is_remembered(_sha256(path)):
        raise InputError(
            f"{path}: refusing to load this pickle-based model file: loading a pickle can run "
            f"arbitrary code, and this file was not saved by deepfeat on this machine (or was "
            f"changed since). If you trust its source, load it with trusted=True (CLI: --trust); "
            f"to share models safely, save them as .skops"
        )
    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything
        raise InputError(f"{path}: cannot read model file: {type(exc).__name__}: {exc}") from None


def _load_skops(path: str, trusted: bool | Sequence[str]) -> Any:
    sio = _skops()
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises anything
        raise InputError(f"{path}: cannot read .skops file: {type(exc).__name__}: {exc}") from None
    allowed = set(TRUSTED_TYPES)
    if trusted is True:
        allowed |= set(untrusted)
    elif trusted:
        allowed |= set(trusted)
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise InputError(
            f"{path}: the file contains types that are not on the allow-list: {refused}. "
            f"If you trust them, pass trusted={refused!r}"
        )
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot load .skops file: {type(exc).__name__}: {exc}") from None


def _check_backbones(model: Any, path: str) -> None:
    from deepfeat.featurize.factory import featurizer_class

    for spec in featurizer_specs(model):
        if spec.get("backbone") == "tfidf":
            continue  # a fitted space: the vectorizer is in the model
        try:
            featurizer_class(spec["backbone"]).from_spec(spec, device="cpu")
        except DeepfeatError as exc:
            raise type(exc)(
                f"{path}: the model was trained on features of backbone {spec.get('backbone')!r} "
                f"(weights {spec.get('weights_id')!r}), which is not available here: {exc}"
            ) from None
