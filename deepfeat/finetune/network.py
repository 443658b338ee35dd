"""The network that is fine-tuned: the registry backbone cut where the frozen features are
taken, plus a new linear last layer; and its conversion back into a registry checkpoint.

The body is exactly what :class:`~deepfeat.featurize.Featurizer` runs for the same
backbone, layer and pooling (built by :func:`~deepfeat.featurize.truncate.truncate`), so
the embeddings of a saved checkpoint are the fine-tuned body's outputs. The checkpoint is
the *full* classification model's state dict (the original classifier included, untouched)
so that :func:`~deepfeat.featurize.backbones.load_checkpoint` loads it strictly, like any
other local weights file.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from deepfeat.featurize.backbones import ResolvedBackbone
from deepfeat.featurize.truncate import truncate
from deepfeat.process_state import forked_torch_rng

__all__ = ["FineTuneNet", "build_network", "save_backbone_checkpoint"]

_BODY = "body.body."


class FineTuneNet(nn.Module):
    """``head(body(x))`` with a block index per parameter (for freezing and lr decay).

    Parameters
    ----------
    body : nn.Module
        The truncated backbone, returning ``(N, D)`` embeddings.
    head : nn.Linear
        The new last layer.
    blocks : dict of str to int
        Block index of each body parameter (``0`` nearest the input); the head is the
        block after the last.
    """

    def __init__(self, body: nn.Module, head: nn.Linear, blocks: dict[str, int]) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.blocks = dict(blocks)
        self.n_blocks = (max(blocks.values()) + 1) if blocks else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def block_of(self, name: str) -> int:
        """Block index of parameter ``name`` (``n_blocks`` for the head)."""
        return self.blocks.get(name, self.n_blocks)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], tuple[int]]:
        """timm's grouping hook: ``param_groups_layer_decay`` assigns lr scales by it."""
        return lambda name: (self.block_of(name),)


def _timm_blocks(model: nn.Module) -> dict[str, int] | None:
    if not hasattr(model, "group_matcher"):
        return None
    from timm.models import group_parameters

    return group_parameters(model, model.group_matcher(coarse=True), reverse=True)


def _module_blocks(model: nn.Module) -> dict[str, int]:
    """Blocks of a model without timm's ``group_matcher`` (torchvision): its top-level
    children in order, a numbered container's children (``features.3``) one block each."""
    order: dict[str, int] = {}
    out = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        out[name] = order.setdefault(key, len(order))
    return out


def _invert(layer_map: dict) -> dict[str, int]:
    # group_parameters(reverse=True) maps block -> names; we want name -> block
    if layer_map and isinstance(next(iter(layer_map.values())), list):
        return {n: int(b) for b, names in layer_map.items() for n in names}
    return {n: int(b) for n, b in layer_map.items()}


def build_network(
    resolved: ResolvedBackbone, layer: str | None, pool: str, n_classes: int
) -> tuple[FineTuneNet, dict[str, torch.Tensor]]:
    """Build the network to fine-tune and the full model's state dict (the checkpoint template).

    Returns
    -------
    net : FineTuneNet
        In train mode, on the CPU; the head is zero-initialised.
    template : dict
        The pretrained full model's state dict, which :func:`save_backbone_checkpoint`
        overwrites with the fine-tuned body's tensors.
    """
    model = resolved.build()
    template = {k: v.detach().clone() for k, v in model.state_dict().items()}
    blocks = _invert(_timm_blocks(model) or _module_blocks(model))
    body = truncate(model, layer, pool, resolved.family)
    h, w = resolved.preprocess.crop
    with torch.inference_mode():
        dim = int(body.eval()(torch.zeros(1, 3, h, w)).shape[1])
    with forked_torch_rng():  # its random initialisation is overwritten: the caller's RNG is kept
        head = nn.Linear(dim, n_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    body_names = [n for n, _ in body.named_parameters()]
    kept = {f"body.{n}": blocks[n.removeprefix("body.")] for n in body_names if n.removeprefix("body.") in blocks}
    # a cut graph numbers only the blocks it kept: renumber them 0..n-1
    ranks = {b: i for i, b in enumerate(sorted(set(kept.values())))}
    net = FineTuneNet(body, head, {n: ranks[b] for n, b in kept.items()})
    return net.train(), template


def backbone_state(net: FineTuneNet, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full model's state dict with the fine-tuned body's tensors in place."""
    state = dict(template)
    for name, value in net.state_dict().items():
        if not name.startswith(_BODY):
            continue
        key = name[len(_BODY):]
        if key not in state:  # pragma: no cover - a graph module renaming a tensor
            raise RuntimeError(f"fine-tuned tensor {key!r} has no place in the backbone's state dict")
        state[key] = value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).clone()
    return state


def save_backbone_checkpoint(net: FineTuneNet, template: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Write the fine-tuned backbone as a registry checkpoint, atomically (tmp + ``os.replace``)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(backbone_state(net, template), tmp)
    os.replace(tmp, path)
    return path

