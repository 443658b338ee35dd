"""Cut a backbone at a named layer and pool its output into one vector per image.

The default cut is the model's own penultimate, globally pooled embedding (the input of
its classifier). Any other node of the graph can be named; truncation goes through the
libraries' own feature-extraction APIs (torchvision's ``create_feature_extractor``, timm's
FX wrapper that knows its custom layers), so nothing after the cut is computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepfeat.exceptions import InvalidParameterError, LayerNotFoundError

__all__ = ["POOLINGS", "PENULTIMATE", "Truncated", "truncate", "list_layers", "pool_features"]

POOLINGS = ("avg", "max", "gem", "avgmax")
PENULTIMATE = "penultimate"
_GEM_P = 3.0


def pool_features(x: torch.Tensor, pool: str) -> torch.Tensor:
    """Reduce a layer output to ``(N, D)``.

    4-D maps ``(N, C, H, W)`` are pooled over space: ``avg``, ``max``, ``gem`` (generalised
    mean, p=3, on values clamped at 1e-6) or ``avgmax`` (the mean of avg and max, as in timm).
    Token sequences ``(N, T, C)`` are pooled over tokens the same way; ``(N, D)`` is returned as is.
    """
    if x.ndim == 2:
        return x
    if x.ndim == 4:
        flat = x.flatten(2)  # N, C, HW
    elif x.ndim == 3:
        flat = x.transpose(1, 2)  # N, C, T
    else:
        flat = x.flatten(1).unsqueeze(-1)
    if pool == "avg":
        return flat.mean(-1)
    if pool == "max":
        return flat.amax(-1)
    if pool == "gem":
        return flat.float().clamp(min=1e-6).pow(_GEM_P).mean(-1).pow(1.0 / _GEM_P).to(x.dtype)
    if pool == "avgmax":
        return 0.5 * (flat.mean(-1) + flat.amax(-1))
    raise InvalidParameterError(f"pool must be one of {POOLINGS}, got {pool!r}")


class Truncated(nn.Module):
    """A backbone cut at ``layer`` followed by pooling; ``forward`` returns ``(N, D)``."""

    def __init__(self, body: nn.Module, layer: str, pool: str, node: str | None) -> None:
        super().__init__()
        self.body = body
        self.layer = layer
        self.pool = pool
        self._node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if isinstance(out, dict):
            out = out[self._node]
        return pool_features(out, self.pool).flatten(1)


def _drop_classifier(model: nn.Module) -> nn.Module:
    """Make ``model`` return its penultimate embedding (the classifier's input)."""
    if hasattr(model, "reset_classifier") and hasattr(model, "forward_head"):  # timm
        model.reset_classifier(0)
        return model
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise LayerNotFoundError(
            f"{type(model).__name__} has no linear classifier to remove; name a layer "
            f"explicitly (list them with `deepfeat backbones NAME --layers`)"
        )
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def _graph_nodes(model: nn.Module, family: str) -> list[str]:
    if family in ("timm", "builtin"):
        from timm.models._features_fx import get_graph_node_names
    else:
        from torchvision.models.feature_extraction import get_graph_node_names
    return list(get_graph_node_names(model)[1])


def truncate(model: nn.Module, layer: str | None, pool: str | None, family: str) -> Truncated:
    """Return ``model`` cut at ``layer`` (``None``: penultimate) with ``pool`` pooling.

    Raises
    ------
    LayerNotFoundError
        When ``layer`` is not a node of the graph (the message lists close matches).
    """
    layer = layer or PENULTIMATE
    if layer == PENULTIMATE:
        if pool not in (None, "avg"):
            raise InvalidParameterError(
                "the penultimate embedding uses the model's own global pooling; "
                f"pool={pool!r} applies to named layers only"
            )
        return Truncated(_drop_classifier(model), PENULTIMATE, "avg", None)
    pool = pool or "avg"
    if pool not in POOLINGS:
        raise InvalidParameterError(f"pool must be one of {POOLINGS}, got {pool!r}")
    nodes = _graph_nodes(model, family)
    node = _node_for(model, nodes, layer)
    if node is None:
        import difflib

        names = nodes + [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
        raise LayerNotFoundError(
            f"layer {layer!r} is not a node or module of this backbone"
            + (f"; close matches: {', '.join(close)}" if close else "")
            + ". List cut points with `deepfeat backbones NAME --layers`."
        )
    if family in ("timm", "builtin"):
        from timm.models._features_fx import create_feature_extractor
    else:
        from torchvision.models.feature_extraction import create_feature_extractor
    body = create_feature_extractor(model, return_nodes={node: node})
    return Truncated(body, layer, pool, node)


def _node_for(model: nn.Module, nodes: list[str], layer: str) -> str | None:
    """The graph node whose output is ``layer``'s output.

    ``layer`` may be a graph node itself or a module (``layer3``, ``blocks.4``): a traced
    module is expanded into its ops, so its output is its last node in execution order.
    """
    if layer in nodes:
        return layer
    if layer not in dict(model.named_modules()):
        return None
    inner = [n for n in nodes if n.startswith(layer + ".")]
    return inner[-1] if inner else None


def list_layers(model: nn.Module, family: str, input_size: tuple[int, int]) -> list[dict[str, Any]]:
    """List useful cut points: blocks at depth 1 and 2 of the module tree, with output sizes.

    Each row has ``layer``, ``shape`` (output without the batch axis) and ``dim`` (the
    pooled embedding size). Sizes come from one forward pass with hooks on a dummy input.
    """
    nodes = _graph_nodes(model, family)
    candidates = [
        n for n, m in model.named_modules()
        if n and n.count(".") <= 1 and _node_for(model, nodes, n) is not None
        and not isinstance(m, (nn.Dropout, nn.Identity))
    ]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name in candidates:
        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, *input_size))
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for name in candidates:
        if name not in shapes:
            continue
        shape = shapes[name]
        dim = shape[0] if len(shape) in (1, 3) else shape[-1]
        rows.append({"layer": name, "shape": list(shape), "dim": int(dim)})
    return rows
