"""Backbone families: ``torchvision:<arch>`` and ``timm:<arch>``.

Weights go through each library's own API (torchvision's weights enums, timm's pretrained
tags), and preprocessing is read from the same weights configuration.
"""

from __future__ import annotations

import fnmatch
import os
from functools import lru_cache

from torch import nn

from deepfeat.exceptions import UnknownBackboneError, WeightsUnavailableError
from deepfeat.featurize.preprocess import Preprocess
from deepfeat.featurize.registry import (
    BackboneSpec,
    ResolvedBackbone,
    checkpoint_id,
    register_family,
    unknown_message,
    weights_unavailable,
)


class TorchvisionFamily:
    """Every torchvision classification model, weights via ``torchvision.models.get_model``."""

    prefix = "torchvision"

    @staticmethod
    @lru_cache(maxsize=1)
    def _archs() -> tuple[str, ...]:
        import torchvision.models as tvm

        return tuple(sorted(tvm.list_models(module=tvm)))

    def list_archs(self, pattern: str) -> list[str]:
        return [a for a in self._archs() if fnmatch.fnmatch(a, pattern)]

    def _weights_enum(self, arch: str, weights: str | None):
        import torchvision.models as tvm

        enum = tvm.get_model_weights(arch)
        if weights is None or weights == "DEFAULT":
            return enum.DEFAULT
        try:
            return enum[weights]
        except KeyError:
            names = ", ".join(["DEFAULT", *[m.name for m in enum]])
            raise WeightsUnavailableError(
                f"torchvision:{arch} has no weights {weights!r}; choose one of {names} or None"
            ) from None

    def offline_available(self, arch: str) -> bool:
        import torch.hub

        try:
            w = self._weights_enum(arch, "DEFAULT")
        except Exception:
            return False
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(w.url))
        return os.path.isfile(path)

    def resolve(self, arch: str, weights: str | None, checkpoint: str | None) -> ResolvedBackbone:
        if arch not in self._archs():
            raise UnknownBackboneError(unknown_message(f"torchvision:{arch}"))
        w = self._weights_enum(arch, weights)  # preprocessing of the (default) weights
        preprocess = Preprocess.from_torchvision_transforms(w.transforms())
        name = f"torchvision:{arch}"
        if checkpoint:
            wid = checkpoint_id(checkpoint)
        elif weights is None:
            wid = "random"
        else:
            wid = f"{type(w).__name__}.{w.name}"
        load = None if (weights is None or checkpoint) else w

        def build() -> nn.Module:
            import torchvision.models as tvm

            try:
                return tvm.get_model(arch, weights=load)
            except (OSError, RuntimeError) as exc:  # URLError is an OSError
                raise weights_unavailable(name, _short(exc)) from None

        return ResolvedBackbone(
            spec=BackboneSpec(name, weights, checkpoint), family=self.prefix, arch=arch,
            weights_id=wid, preprocess=preprocess,
            offline=load is None or self.offline_available(arch), builder=build,
        )


class TimmFamily:
    """timm models; ``weights`` is ``DEFAULT`` (timm's default tag), a tag, or ``None``."""

    prefix = "timm"

    def list_archs(self, pattern: str) -> list[str]:
        import timm

        return list(timm.list_models(pattern or "*"))

    def offline_available(self, arch: str) -> bool:
        return False  # pretrained timm weights come from the Hugging Face hub

    def resolve(self, arch: str, weights: str | None, checkpoint: str | None) -> ResolvedBackbone:
        import timm
        from timm.data import resolve_data_config

        base = arch.split(".", 1)[0]
        if not timm.is_model(base):
            raise UnknownBackboneError(unknown_message(f"timm:{arch}"))
        full = arch if (weights in (None, "DEFAULT") or "." in arch) else f"{arch}.{weights}"
        try:
            cfg = timm.models.get_pretrained_cfg(full)
        except Exception:
            cfg = None
        if cfg is None:
            raise WeightsUnavailableError(f"timm:{arch} has no pretrained config {full!r}")
        preprocess = Preprocess.from_timm_config(resolve_data_config(cfg.to_dict()))
        name = f"timm:{arch}"
        if checkpoint:
            wid = checkpoint_id(checkpoint)
        elif weights is None:
            wid = "random"
        else:
            wid = f"timm:{cfg.hf_hub_id or full}"
        pretrained = not (weights is None or checkpoint)

        def build() -> nn.Module:
            try:
                return timm.create_model(full, pretrained=pretrained)
            except Exception as exc:  # hub and network errors vary by version
                if not pretrained:
                    raise
                raise weights_unavailable(name, _short(exc)) from None

        return ResolvedBackbone(
            spec=BackboneSpec(name, weights, checkpoint), family=self.prefix, arch=base,
            weights_id=wid, preprocess=preprocess, offline=not pretrained, builder=build,
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


register_family("torchvision", TorchvisionFamily())
register_family("timm", TimmFamily())
