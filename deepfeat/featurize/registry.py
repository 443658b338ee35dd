"""The backbone registry's mechanics: specs, registration, lookup.

Builders register through :func:`register_backbone`; families of names (``torchvision:``,
``timm:``, ``hf:``) through :func:`register_family`. The modules that register
(:mod:`~deepfeat.featurize.offline`, :mod:`~deepfeat.featurize.families`,
:mod:`~deepfeat.featurize.text_encoders`) import this module, and
:mod:`deepfeat.featurize.backbones` imports them: import the catalogue from there, where
every built-in name is registered. Lookups here see what has been registered so far.
Nothing heavy happens on :meth:`BackboneSpec.resolve`: the model is only built, and
weights only loaded, by :meth:`ResolvedBackbone.build`.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from deepfeat.exceptions import UnknownBackboneError, WeightsUnavailableError
from deepfeat.featurize.hashing import file_digest
from deepfeat.featurize.preprocess import Preprocess
from deepfeat.process_state import forked_torch_rng

__all__ = [
    "DEFAULT_BACKBONE",
    "RANDOM_SEED",
    "BackboneSpec",
    "ResolvedBackbone",
    "register_backbone",
    "register_family",
    "list_backbones",
    "resolve_backbone",
    "backbone_modality",
    "MODALITIES",
    "BackboneFamily",
    "checkpoint_id",
    "load_checkpoint",
    "unknown_message",
    "weights_unavailable",
]

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"
#: What a backbone reads: images (pixels) or texts (tokens).
MODALITIES = ("image", "text")
#: Random-weight models are built under this seed, so their feature space is reproducible.
RANDOM_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """What to build: a registry name, a weights choice and an optional local checkpoint.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"efficientnet_lite0"``, ``"torchvision:resnet50"``,
        ``"timm:convnext_tiny"``.
    weights : str or None
        ``"DEFAULT"`` for the model's default pretrained weights, a named weights
        variant (a torchvision enum member such as ``"IMAGENET1K_V2"`` or a timm tag such
        as ``"in1k"``), or ``None`` for random weights (seeded, reproducible).
    checkpoint : str or None
        Path of a local state-dict file loaded instead of downloading weights.

    Examples
    --------
    >>> from deepfeat.featurize.backbones import BackboneSpec
    >>> spec = BackboneSpec("efficientnet_lite0")
    >>> spec.resolve().preprocess.mean
    (0.5, 0.5, 0.5)
    """

    name: str = DEFAULT_BACKBONE
    weights: str | None = "DEFAULT"
    checkpoint: str | None = None

    def resolve(self) -> ResolvedBackbone:
        return resolve_backbone(self.name, weights=self.weights, checkpoint=self.checkpoint)


@dataclass(frozen=True)
class ResolvedBackbone:
    """A backbone spec with its weights identifier and preprocessing known (model not built).

    ``legacy_weights_ids`` are identifiers that older deepfeat versions gave these same
    weights (e.g. a package version string before identifiers became content hashes):
    models saved and cache spaces written under them stay usable.
    """

    spec: BackboneSpec
    family: str
    arch: str
    weights_id: str
    preprocess: Preprocess
    offline: bool
    builder: Callable[[], nn.Module] = field(repr=False, compare=False)
    legacy_weights_ids: tuple[str, ...] = ()
    modality: str = "image"

    def build(self) -> nn.Module:
        """Build the full classification model (head included) with its weights, in eval mode."""
        # Building initialises every layer from torch's global generator before any weights
        # are loaded: forked, so the caller's random state is untouched (and random weights
        # are seeded, the same in every process).
        with forked_torch_rng():
            if self.spec.weights is None and self.spec.checkpoint is None:
                torch.manual_seed(RANDOM_SEED)
            model = self.builder()
        if self.spec.checkpoint is not None:
            load_checkpoint(model, self.spec.checkpoint)
        return model.eval()


class BackboneFamily(Protocol):
    """A family of names sharing a prefix (``torchvision:``, ``timm:``)."""

    def resolve(self, arch: str, weights: str | None, checkpoint: str | None) -> ResolvedBackbone: ...

    def list_archs(self, pattern: str) -> list[str]: ...

    def offline_available(self, arch: str) -> bool: ...


@dataclass(frozen=True)
class _Entry:
    name: str
    build: Callable[[str | None], nn.Module]
    preprocess: Preprocess | Callable[[], Preprocess]
    weights_id: Callable[[str | None], str]
    offline: bool
    description: str
    legacy_weights_ids: Callable[[str | None], tuple[str, ...]] | None = None
    modality: str = "image"


_REGISTRY: dict[str, _Entry] = {}
_FAMILIES: dict[str, BackboneFamily] = {}


def register_backbone(
    name: str, *, preprocess: Preprocess | Callable[[], Preprocess],
    weights_id: Callable[[str | None], str], offline: bool, description: str,
    legacy_weights_ids: Callable[[str | None], tuple[str, ...]] | None = None,
    modality: str = "image",
) -> Callable[[Callable[[str | None], nn.Module]], Callable[[str | None], nn.Module]]:
    """Decorator registering a builder ``fn(weights) -> nn.Module`` under ``name``.

    ``preprocess`` may be a function returning it (called on resolution, so reading it
    from a library's weights configuration costs nothing at import): a
    :class:`~deepfeat.featurize.preprocess.Preprocess` for images, a
    :class:`~deepfeat.featurize.text_encoders.TextPreprocess` (tokenizer and window) for
    texts. ``weights_id`` maps the weights argument to the identifier that names the
    weights in feature-space fingerprints; ``legacy_weights_ids`` to identifiers older
    versions used for them. ``modality`` is what the backbone reads (:data:`MODALITIES`).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")

    def deco(fn: Callable[[str | None], nn.Module]) -> Callable[[str | None], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = _Entry(name, fn, preprocess, weights_id, offline, description,
                                 legacy_weights_ids, modality)
        return fn

    return deco


def register_family(prefix: str, family: BackboneFamily) -> None:
    """Register a family resolving names ``prefix:<arch>``."""
    _FAMILIES[prefix] = family


def resolve_backbone(
    name: str, *, weights: str | None = "DEFAULT", checkpoint: str | None = None
) -> ResolvedBackbone:
    """Resolve a registry name into a :class:`ResolvedBackbone` without building it.

    Raises
    ------
    UnknownBackboneError
        When the name is not registered; the message suggests close matches.
    """
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        if not os.path.isfile(checkpoint):
            raise WeightsUnavailableError(f"checkpoint file not found: {checkpoint}")
    spec = BackboneSpec(name, weights, checkpoint)
    if name in _REGISTRY:
        e = _REGISTRY[name]
        legacy = () if (checkpoint or e.legacy_weights_ids is None) else e.legacy_weights_ids(weights)
        return ResolvedBackbone(
            spec=spec, family="builtin", arch=name,
            weights_id=checkpoint_id(checkpoint) if checkpoint else e.weights_id(weights),
            preprocess=e.preprocess() if callable(e.preprocess) else e.preprocess,
            offline=e.offline or weights is None or checkpoint is not None,
            builder=lambda: e.build(None if checkpoint else weights),
            legacy_weights_ids=tuple(legacy),
            modality=e.modality,
        )
    prefix, sep, arch = name.partition(":")
    if sep and prefix in _FAMILIES:
        return _FAMILIES[prefix].resolve(arch, weights, checkpoint)
    raise UnknownBackboneError(unknown_message(name))


def unknown_message(name: str) -> str:
    prefix, sep, arch = name.partition(":")
    if sep and prefix in _FAMILIES:
        pool = [f"{prefix}:{a}" for a in _FAMILIES[prefix].list_archs("*")]
    else:
        pool = list(_REGISTRY) + [f"{p}:" for p in _FAMILIES]
        for p, fam in _FAMILIES.items():
            pool += [f"{p}:{a}" for a in fam.list_archs("*")]
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown backbone {name!r}.{hint} Names are {', '.join(map(repr, _REGISTRY))}, "
        f"'torchvision:<arch>', 'timm:<arch>' or (texts) 'hf:<repo>'; list them with `deepfeat backbones`."
    )


def backbone_modality(name: str) -> str:
    """What the backbone ``name`` reads, ``"image"`` or ``"text"``, without resolving weights.

    Examples
    --------
    >>> from deepfeat.featurize.backbones import backbone_modality
    >>> backbone_modality("minilm"), backbone_modality("efficientnet_lite0")
    ('text', 'image')
    """
    if name in _REGISTRY:
        return _REGISTRY[name].modality
    prefix, sep, _ = name.partition(":")
    if sep and prefix in _FAMILIES:
        return getattr(_FAMILIES[prefix], "modality", "image")
    raise UnknownBackboneError(unknown_message(name))


def list_backbones(pattern: str = "*", *, families: bool = True) -> list[dict[str, Any]]:
    """List registered backbones as dicts with ``name``, ``family``, ``offline``, ``description``.

    Parameters
    ----------
    pattern : str
        Shell-style pattern on the full name, e.g. ``"torchvision:resnet*"``.
    families : bool
        Also list the archs of the ``torchvision:`` and ``timm:`` families.
    """
    rows = [
        {"name": e.name, "family": "builtin", "offline": e.offline, "description": e.description,
         "modality": e.modality}
        for e in _REGISTRY.values() if fnmatch.fnmatch(e.name, pattern)
    ]
    if families:
        for prefix, fam in _FAMILIES.items():
            sub = pattern.split(":", 1)[1] if pattern.startswith(prefix + ":") else pattern
            if ":" in pattern and not pattern.startswith(prefix + ":"):
                continue
            for arch in fam.list_archs(sub):
                rows.append({
                    "name": f"{prefix}:{arch}", "family": prefix,
                    "offline": fam.offline_available(arch),
                    "description": f"{prefix} {arch} (random weights always available offline)",
                    "modality": getattr(fam, "modality", "image"),
                })
    return rows


# -- checkpoints ------------------------------------------------------------------------
def checkpoint_id(path: str) -> str:
    try:
        digest = file_digest(path)
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    return f"checkpoint:{os.path.basename(path)}:sha256={digest[:16]}"


def load_checkpoint(model: nn.Module, path: str) -> None:
    """Load a local state dict (plain, or under ``state_dict``/``model``) strictly by name."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsUnavailableError(f"cannot read checkpoint {path}: {exc}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightsUnavailableError(f"checkpoint {path} does not hold a state dict")
    try:
        model.load_state_dict(obj, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise WeightsUnavailableError(
            f"checkpoint {path} does not match the architecture: {' '.join(first)}"
        ) from None


def weights_unavailable(name: str, reason: str) -> WeightsUnavailableError:
    """The one-line error for weights that cannot be had (typically: offline)."""
    return WeightsUnavailableError(
        f"cannot load pretrained weights for {name!r} ({reason}). Offline? Use the built-in "
        f"offline default backbone {DEFAULT_BACKBONE!r}, or pass a local weights file with "
        f"--checkpoint PATH (Python: checkpoint=PATH)."
    )
