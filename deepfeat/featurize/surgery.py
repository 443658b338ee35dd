"""Network surgery: rewrite an eval-mode network into an equivalent, faster one.

Each rewrite works on a copy, checks the copy against the original on an example batch,
and falls back to the original (returning it, or ``None``) when the outputs differ or
anything fails -- an optimisation must never break featurizing:

- :func:`optimize_for_inference` folds eval-mode batch norms into the convolutions
  that feed them (:func:`fold_batchnorm`);
- :func:`fold_input_normalization` moves the ``(x / 255 - mean) / std`` normalisation
  into the first convolution, so the network takes raw pixels (:class:`RawPixelInput`);
- :func:`trace_for_cpu` makes a frozen TorchScript copy that oneDNN can fuse.

Where the network runs (device, precision, memory layout) is
:mod:`deepfeat.featurize.runtime`'s job.
"""

from __future__ import annotations

import copy
import logging

import torch

from deepfeat.featurize.runtime import Runtime

__all__ = [
    "RawPixelInput",
    "fold_batchnorm",
    "fold_input_normalization",
    "optimize_for_inference",
    "trace_for_cpu",
]

log = logging.getLogger(__name__)

def _bn_replacement(bn: torch.nn.Module) -> torch.nn.Module | None:
    """What is left of a batch-norm layer once its affine map lives in the convolution."""
    if type(bn) is torch.nn.BatchNorm2d:
        return torch.nn.Identity()
    # timm's BatchNormAct2d: batch norm, then ``drop``, then ``act`` (in that order)
    if type(bn).__name__ == "BatchNormAct2d" and isinstance(getattr(bn, "drop", None), torch.nn.Module) \
            and isinstance(getattr(bn, "act", None), torch.nn.Module):
        return torch.nn.Sequential(bn.drop, bn.act)
    return None


def fold_batchnorm(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Fold eval-mode batch norms into the convolutions that feed them, in place.

    A batch norm at inference is a per-channel affine map, so ``bn(conv(x))`` equals a
    convolution with rescaled weights and a shifted bias; the separate pass over the
    activation map disappears (about a quarter of EfficientNet-Lite0's CPU time). Pairs
    are found from one forward pass on ``example`` with hooks: a batch norm is folded only
    when its input is the very tensor a convolution returned, and both ran exactly once.

    Returns
    -------
    int
        Number of batch norms folded.
    """
    modules = dict(model.named_modules())
    conv_out: dict[int, tuple[str, torch.Tensor]] = {}  # keep outputs alive: ids stay unique
    bn_in: dict[str, int] = {}
    calls: dict[str, int] = {}
    hooks = []

    def on_conv(name: str):
        def hook(_m, _i, out):
            calls[name] = calls.get(name, 0) + 1
            conv_out[id(out)] = (name, out)
        return hook

    def on_bn(name: str):
        def hook(_m, inp, _o):
            calls[name] = calls.get(name, 0) + 1
            bn_in[name] = id(inp[0])
        return hook

    for name, m in modules.items():
        if type(m) is torch.nn.Conv2d or (isinstance(m, torch.nn.Conv2d) and type(m).__name__ == "Conv2dSame"):
            hooks.append(m.register_forward_hook(on_conv(name)))
        elif isinstance(m, torch.nn.BatchNorm2d) and _bn_replacement(m) is not None:
            hooks.append(m.register_forward_hook(on_bn(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    folded = 0
    for bn_name, in_id in bn_in.items():
        hit = conv_out.get(in_id)
        if hit is None or calls.get(bn_name) != 1 or calls.get(hit[0]) != 1:
            continue
        conv, bn = modules[hit[0]], modules[bn_name]
        if bn.running_mean is None or bn.running_var is None:
            continue
        replacement = _bn_replacement(bn)
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var.float() + bn.eps)
            if bn.affine:
                scale = scale * bn.weight.float()
            shift = -bn.running_mean.float() * scale
            if bn.affine:
                shift = shift + bn.bias.float()
            if conv.bias is not None:
                shift = shift + conv.bias.float() * scale
            weight = conv.weight.float() * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
            fmt = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) \
                and not conv.weight.is_contiguous() else torch.contiguous_format
            conv.weight = torch.nn.Parameter(weight.to(conv.weight.dtype).contiguous(memory_format=fmt),
                                             requires_grad=False)
            conv.bias = torch.nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, replacement)
        folded += 1
    return folded


def optimize_for_inference(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """Return an eval-mode copy of ``model`` with batch norms folded, checked against it.

    The copy is used only if it reproduces the original's output on ``example`` (to
    float32 rounding); otherwise ``model`` itself is returned. No TorchScript, no
    compilation: the result is an ordinary module, ready in well under a second.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    >>> fast = optimize_for_inference(net, torch.randn(2, 3, 8, 8))
    >>> [type(m).__name__ for m in fast]
    ['Conv2d', 'Identity', 'ReLU']
    """
    try:
        fast = copy.deepcopy(model).eval()
        n = fold_batchnorm(fast, example)
        if n == 0:
            return model
        with torch.no_grad():
            ref, got = model(example), fast(example)
        tol = 1e-4 * float(ref.abs().max()) + 1e-6
        if ref.shape != got.shape or not torch.allclose(got, ref, rtol=1e-3, atol=tol):
            log.warning("folding batch norms changed the output; using the network as it is")
            return model
    except Exception as exc:  # noqa: BLE001 - an optimisation must never break featurizing
        log.info("batch norm folding skipped: %s: %s", type(exc).__name__, exc)
        return model
    log.debug("folded %d batch norms into convolutions", n)
    return fast


class _CastIO(torch.nn.Module):
    """Run ``net`` (already converted to ``dtype``) on float32 input; return float32."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


def trace_for_cpu(
    model: torch.nn.Module, example: torch.Tensor, runtime: Runtime, check: torch.Tensor
) -> torch.nn.Module | None:
    """A frozen TorchScript copy of ``model`` whose convolutions oneDNN fuses; CPU only.

    The eager network runs each convolution, activation and residual add as a separate
    oneDNN call under autocast, casting weights on every call. Tracing it at the
    runtime's dtype, freezing the weights in, and letting oneDNN Graph fuse the traced
    graph removes those casts and memory passes: EfficientNet-Lite0 on one core of a
    2-core AVX-512 CPU went from ~45 to ~65 images/s in fp32 and from ~63-80 to
    ~115-130 in bf16 (batch of 16). Building takes about 2 s, so
    :class:`~deepfeat.featurize.Featurizer` only does it for jobs large enough to repay it.

    The traced copy is used only if it reproduces ``model`` (under the runtime's autocast)
    on ``check``, a batch of another size than ``example``: every row's cosine similarity
    at least 0.999 and the same shape. Otherwise, or on any error, ``None`` is returned and
    the eager network stays in use. oneDNN Graph fusion is switched on while tracing and
    warming up (the fused kernels are built then) and restored afterwards; a graph it
    cannot take is traced and frozen without it.

    Parameters
    ----------
    model : torch.nn.Module
        The eval-mode network, on the CPU, in the runtime's memory layout.
    example : Tensor
        A float32 batch of the shape most calls will have (it is traced and warmed on).
    runtime : Runtime
    check : Tensor
        A float32 batch of another size, for the comparison with the eager network.
    """
    if runtime.device.type != "cpu":
        return None
    from deepfeat.process_state import ignoring_warnings

    got = None
    # oneDNN fusion is a process-wide switch: set and restored inside the scope whose lock
    # orders every deepfeat change of process state (and silences the tracer's warnings
    # about Python values), so concurrent traces cannot restore each other's setting.
    with ignoring_warnings():
        fusion_before = torch._C._jit_llga_enabled()
        for fuse in (True, False):  # oneDNN Graph cannot take every op (GeM's pow): then plain
            try:
                torch.jit.enable_onednn_fusion(fuse)
                net = _CastIO(copy.deepcopy(model).to(runtime.dtype), runtime.dtype).eval()
                with torch.no_grad():
                    traced = torch.jit.freeze(torch.jit.trace(net, example, check_trace=False))
                    for _ in range(3):  # profile, then optimise (fuse) for this shape
                        traced(example)
                    got = traced(check)
                break
            except Exception as exc:  # noqa: BLE001 - an optimisation must never break featurizing
                log.info("traced CPU forward (oneDNN fusion %s) skipped: %s: %s",
                         "on" if fuse else "off", type(exc).__name__, exc)
            finally:
                torch.jit.enable_onednn_fusion(fusion_before)
    if got is None:
        return None
    with torch.no_grad(), runtime.autocast():
        ref = model(check).float()
    if got.shape != ref.shape:
        log.warning("the traced network gave shape %s, not %s; using it eagerly", tuple(got.shape), tuple(ref.shape))
        return None
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1), dim=1, eps=1e-12)
    if not bool(torch.isfinite(got).all()) or float(cos.min()) < 0.999:
        log.warning("the traced network's output differs (min cosine %.5f); using it eagerly", float(cos.min()))
        return None
    return traced


class _BorderBias(torch.nn.Module):
    """A convolution plus a bias that differs from its interior value only near the borders.

    The rows ``[:top]`` and ``[H-bottom:]`` and, between them, the columns ``[:left]`` and
    ``[W-right:]`` of the output get ``delta`` added: an in-place add over a few border
    lines instead of a pass over the whole activation map.
    """

    def __init__(self, conv: torch.nn.Module, delta: torch.Tensor, edges: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("delta", delta)
        self.top, self.bottom, self.left, self.right = edges

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        h, w = y.shape[-2], y.shape[-1]
        d = self.delta.to(y.dtype)
        t, b, lf, r = self.top, self.bottom, self.left, self.right
        if t:
            y[:, :, :t] += d[:, :t]
        if b:
            y[:, :, h - b :] += d[:, h - b :]
        if lf:
            y[:, :, t : h - b, :lf] += d[:, t : h - b, :lf]
        if r:
            y[:, :, t : h - b, w - r :] += d[:, t : h - b, w - r :]
        return y


class RawPixelInput(torch.nn.Module):
    """A network whose first convolution absorbed the mean/std normalisation.

    It takes the uint8 pixel batch (or the same values as floats) and casts it to its
    weights' dtype: ``0 .. 255`` are exact in bf16, fp16 and fp32.
    """

    takes_raw_pixels = True

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            x = x.to(torch.float32)
        return self.net(x)


def _edges(delta: torch.Tensor, tol: float) -> tuple[int, int, int, int] | None:
    """Widths of the border lines where ``delta`` (C, H, W) is non-zero; None if not a border."""
    big = delta.abs().amax(0) > tol  # (H, W)
    h, w = big.shape

    def run(flags: list[bool]) -> int:  # length of the leading run of True
        return next((i for i, v in enumerate(flags) if not v), len(flags))

    # border lines are narrow (about half a kernel): look for them away from the corners
    rows = big[:, w // 4 : w - w // 4].any(1).tolist()
    cols = big[h // 4 : h - h // 4, :].any(0).tolist()
    top, bottom, left, right = run(rows), run(rows[::-1]), run(cols), run(cols[::-1])
    if top + bottom >= h or left + right >= w or bool(big[top : h - bottom, left : w - right].any()):
        return None
    return top, bottom, left, right


def fold_input_normalization(
    model: torch.nn.Module,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    example: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> RawPixelInput | None:
    """Fold ``(x / 255 - mean) / std`` into the first convolution; None where it does not fit.

    With ``n = a x + b`` (``a = 1 / (255 std)``, ``b = -mean / std`` per channel) and a
    convolution that zero-pads its input, ``conv(pad0(n), W) = conv(pad0(x), W a) +
    conv(pad0(b), W)``. The last term is a fixed bias map for the fixed input size: constant
    inside, different only where the kernel reaches into the padding (zero padding of the
    normalised input is padding with the *mean* of the raw one). So the folded network is
    exact for any padding -- ``padding=1``, timm's TF-"same" ``Conv2dSame``, ``valid`` --
    with the interior value as the convolution's bias and the border lines corrected in
    place (:class:`_BorderBias`). The scaled weights are rounded to ``dtype`` first and the
    bias computed from the rounded ones, so in bf16 the error stays proportional to the
    centred input, as without folding.

    The first convolution is the one whose input is the network's input tensor itself (found
    with hooks on one forward pass); it must be a 3-channel, ungrouped ``Conv2d``. The folded
    copy is used only if it reproduces ``model(normalised example)`` from the raw
    ``example`` (float32, every row's cosine >= 0.99999 and ``allclose``).

    Parameters
    ----------
    model : torch.nn.Module
        The eval-mode network, taking normalised input.
    mean, std : tuple of float
        The preprocessing's normalisation (of pixels scaled to [0, 1]).
    example : Tensor
        A uint8 ``(N, 3, H, W)`` batch at the input size the network will run at.
    dtype : torch.dtype
        The dtype the network will compute in.

    Returns
    -------
    RawPixelInput or None
        A copy taking raw pixels, or None (the caller keeps normalising).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    >>> x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    >>> raw = fold_input_normalization(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), x)
    >>> n = (x / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    >>> bool(torch.allclose(raw(x), net(n), atol=1e-4))
    True
    """
    a = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
    b = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
    x = example.to(torch.float32)
    normalised = (x * a.float().view(1, 3, 1, 1) + b.float().view(1, 3, 1, 1)).contiguous(
        memory_format=torch.channels_last if example.is_contiguous(memory_format=torch.channels_last)
        and not example.is_contiguous() else torch.contiguous_format
    )
    try:
        net = copy.deepcopy(model).eval()
        first: list[str] = []
        hooks = []

        def pre(name: str):
            def hook(_m, inp):
                if inp and inp[0] is normalised:
                    first.append(name)
            return hook

        for name, m in net.named_modules():
            if isinstance(m, torch.nn.Conv2d):
                hooks.append(m.register_forward_pre_hook(pre(name)))
        try:
            with torch.no_grad():
                ref = net(normalised)
        finally:
            for hk in hooks:
                hk.remove()
        if len(first) != 1:
            log.debug("input normalisation not folded: %d convolutions take the input", len(first))
            return None
        conv = net.get_submodule(first[0])
        if conv.in_channels != 3 or conv.groups != 1 or getattr(conv, "padding_mode", "zeros") != "zeros":
            return None
        with torch.no_grad():
            w = conv.weight.float()
            w_raw = (w * a.float().view(1, 3, 1, 1)).to(dtype).float()  # as it will compute
            w_eff = w_raw / a.float().view(1, 3, 1, 1)  # the normalised-input weights it implies
            probe = copy.deepcopy(conv).float()
            probe.weight.copy_(w_eff)
            fill = b.float().view(1, 3, 1, 1).expand(1, 3, *x.shape[-2:]).contiguous()
            bias_map = probe(fill)[0]  # includes the conv's own bias
            ho, wo = bias_map.shape[-2:]
            interior = bias_map[:, ho // 2, wo // 2].clone()
            delta = bias_map - interior.view(-1, 1, 1)
            edges = _edges(delta, 1e-6 * float(bias_map.abs().max()) + 1e-9)
            if edges is None:
                return None
            fmt = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) \
                and not conv.weight.is_contiguous() else torch.contiguous_format
            conv.weight = torch.nn.Parameter(w_raw.to(conv.weight.dtype).contiguous(memory_format=fmt),
                                             requires_grad=False)
            conv.bias = torch.nn.Parameter(interior.to(conv.weight.dtype), requires_grad=False)
        if any(edges):
            parent, _, attr = first[0].rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, _BorderBias(conv, delta, edges))
        raw = RawPixelInput(net).eval()
        with torch.no_grad():
            got = raw(example)
        if dtype == torch.float32:
            tol = 1e-4 * float(ref.abs().max()) + 1e-6
            close = got.shape == ref.shape and torch.allclose(got, ref, rtol=1e-3, atol=tol)
        else:  # weights rounded to dtype: compare with the network that implies
            close = got.shape == ref.shape
        cos = torch.nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1), dim=1, eps=1e-12)
        if not close or float(cos.min()) < 0.99999 - (0 if dtype == torch.float32 else 0.0009):
            log.warning("folding the input normalisation changed the output; normalising separately")
            return None
    except Exception as exc:  # noqa: BLE001 - an optimisation must never break featurizing
        log.info("input normalisation not folded: %s: %s", type(exc).__name__, exc)
        return None
    log.debug("folded the input normalisation into %s", first[0])
    return raw
