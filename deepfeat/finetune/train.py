"""The training loop: freezing, layer-wise lr, warm-up + cosine, early stopping, resumable state.

Optimizer and schedule come from timm's factories (``create_optimizer_v2`` with
``layer_decay``, ``create_scheduler_v2``); mixed precision from ``torch.autocast`` (bf16
on a CPU that computes it natively, fp16 with a gradient scaler or bf16 on CUDA).

After every finished epoch the whole training state (weights, optimizer, schedule, best
epoch so far, history) is written to ``state_path`` atomically (a temporary file, then
``os.replace``): a run killed at any moment, SIGKILL included, and started again with the
same arguments resumes after the last finished epoch. Every epoch reseeds the shuffling,
augmentation and dropout from ``(seed, epoch)``, so a resumed run computes what an
unbroken one would.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deepfeat.featurize.runtime import Runtime
from deepfeat.finetune.images import PixelBank, stratified_holdout
from deepfeat.finetune.network import FineTuneNet
from deepfeat.finetune.recipe import Recipe
from deepfeat.process_state import forked_torch_rng
from deepfeat.training_state import load_state, save_state

__all__ = ["TrainResult", "autocast", "build_optimizer", "fine_tune", "STATE_VERSION"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: Images per forward pass when evaluating the validation split.
EVAL_ROWS = 32


@dataclass
class TrainResult:
    """What :func:`fine_tune` did.

    Attributes
    ----------
    history : list of dict
        Per epoch: ``epoch`` (1-based), ``loss`` (training, label-smoothed), ``train_acc``,
        ``val_acc`` and ``val_loss`` (NaN without a validation split), ``lr`` (of the last
        layer, at the epoch's end), ``trainable`` (parameters trained), ``seconds``.
    best_epoch : int
        The epoch whose weights were kept (1-based).
    stopped_early : bool
    resumed_from : int
        Epochs found finished in the saved state (0: a fresh run).
    n_train, n_val : int
    seconds : float
        Training time of the epochs this call ran.
    images_per_second : float
        Training images (forward + backward) per second of training steps in this call.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from: int = 0
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


@contextlib.contextmanager
def autocast(runtime: Runtime) -> Iterator[None]:
    """Autocast to the runtime's reduced precision (bf16 on CPU/CUDA, fp16 on CUDA), else nothing."""
    if runtime.precision == "fp32" or runtime.device.type not in ("cpu", "cuda"):
        yield
    else:
        with torch.autocast(device_type=runtime.device.type, dtype=runtime.dtype):
            yield


def _set_trainable(net: FineTuneNet, lowest: int) -> int:
    """Train blocks ``>= lowest`` (the head always); return the number of trained parameters."""
    n = 0
    for name, p in net.named_parameters():
        p.requires_grad_(net.block_of(name) >= lowest)
        n += p.numel() if p.requires_grad else 0
    return n


def _norm_modes(net: FineTuneNet, bn_eval: bool) -> None:
    """Training mode, with batch norm in eval mode where asked or where nothing trains it."""
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            frozen = not any(p.requires_grad for p in m.parameters(recurse=False))
            if bn_eval or frozen:
                m.eval()


def _lowest_block(recipe: Recipe, net: FineTuneNet, epoch: int) -> int:
    if not recipe.gradual_unfreeze:
        return recipe.freeze
    return max(recipe.freeze, net.n_blocks - epoch)  # epoch 0: the head alone


def _evaluate(net: FineTuneNet, bank: PixelBank, y: torch.Tensor, idx: np.ndarray, runtime: Runtime
              ) -> tuple[float, float]:
    if len(idx) == 0:
        return float("nan"), float("nan")
    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad(), autocast(runtime):
        for s in range(0, len(idx), EVAL_ROWS):
            part = idx[s : s + EVAL_ROWS]
            out = net(bank.normalize(bank.eval_batch(part), runtime.device, runtime.channels_last)).float()
            target = y[part].to(runtime.device)
            loss += float(nn.functional.cross_entropy(out, target, reduction="sum"))
            correct += int((out.argmax(1) == target).sum())
    return correct / len(idx), loss / len(idx)


def _cpu_state(module_or_opt: Any) -> dict[str, Any]:
    return copy.deepcopy({k: (v.detach().cpu() if torch.is_tensor(v) else v)
                          for k, v in module_or_opt.state_dict().items()})


def build_optimizer(net: FineTuneNet, recipe: Recipe, n_batches: int) -> tuple[Any, Any]:
    """AdamW with layer-wise lr decay and a warm-up + cosine schedule, from timm's factories.

    Blocks below ``recipe.freeze`` get ``requires_grad=False`` and are left out of the
    optimizer. Each remaining parameter group carries timm's ``lr_scale``
    (``layer_decay ** (head block - block)``) and the scheduler sets every group's own
    ``lr`` from it, stepped once per optimisation step (``n_batches`` per epoch).
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    _set_trainable(net, recipe.freeze)  # the optimizer holds every parameter that will train
    opt = create_optimizer_v2(
        net, opt="adamw", lr=recipe.lr, weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay
    )
    sched, _ = create_scheduler_v2(
        opt, sched="cosine", num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.lr * 0.01, min_lr=recipe.lr * 0.01, step_on_epochs=False,
        updates_per_epoch=n_batches,
    )
    return opt, sched


def fine_tune(
    net: FineTuneNet,
    bank: PixelBank,
    y: np.ndarray,
    recipe: Recipe,
    runtime: Runtime,
    *,
    state_path: str | os.PathLike | None = None,
    identity: str = "",
    progress: bool = False,
) -> TrainResult:
    """Fine-tune ``net`` on the images of ``bank`` with integer labels ``y``, in place.

    Parameters
    ----------
    net : FineTuneNet
    bank : PixelBank
        Decoded training images, aligned with ``y``.
    y : ndarray of int
        Class indices ``0 .. n_classes-1``.
    recipe : Recipe
    runtime : Runtime
        Device, precision (autocast) and memory layout.
    state_path : path, optional
        Where the training state is saved after each epoch and resumed from.
    identity : str
        Identity of the run (data, backbone, recipe): a saved state with another identity
        is not resumed.
    progress : bool
        A tqdm bar over epochs on stderr (loss, validation accuracy), if it is a terminal.

    Returns
    -------
    TrainResult
        ``net`` holds the best epoch's weights, in eval mode.
    """
    from tqdm.auto import tqdm

    state_path = None if state_path is None else os.fspath(state_path)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    tr, val = stratified_holdout(np.asarray(y), recipe.val_fraction, recipe.seed)
    result = TrainResult(n_train=len(tr), n_val=len(val))
    dev = runtime.device
    net.to(dev)
    if runtime.channels_last:
        net.to(memory_format=torch.channels_last)

    n_batches = max(1, -(-len(tr) // recipe.batch_size))
    opt, sched = build_optimizer(net, recipe, n_batches)
    scaler = torch.amp.GradScaler("cuda") if (dev.type == "cuda" and runtime.precision == "fp16") else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    start, best_state, best_score, bad, done = 0, None, (-1.0, float("-inf")), 0, False
    saved = load_state(state_path, identity, STATE_VERSION)
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        start, best_state, bad, done = saved["epoch"], saved["best"], saved["bad"], saved["done"]
        best_score = tuple(saved["best_score"])
        result.history = list(saved["history"])
        result.best_epoch = saved["best_epoch"]
        result.stopped_early = saved["stopped_early"]
        result.resumed_from = start
        log.info("resuming fine-tuning after epoch %d of %d (%s)", start, recipe.epochs, state_path)
    if state_path:
        for stale in glob.glob(glob.escape(state_path) + ".tmp-*"):
            with contextlib.suppress(OSError):
                os.remove(stale)

    bar = tqdm(total=recipe.epochs, initial=start, unit="epoch", desc="fine-tune", file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()), leave=False)
    t_steps, n_seen, t_run = 0.0, 0, time.perf_counter()
    try:
        # Each epoch seeds torch's global generator (augmentation and dropout draw from it);
        # forked, so the caller's random state is as it was when fine-tuning returns
        # (concurrent fine-tunes in one process take turns).
        with forked_torch_rng([dev.index or 0] if dev.type == "cuda" else []):
            for epoch in range(start, recipe.epochs if not done else start):
                t_epoch = time.perf_counter()
                seed = _epoch_seed(recipe.seed, epoch)
                torch.manual_seed(seed)
                trainable = _set_trainable(net, _lowest_block(recipe, net, epoch))
                _norm_modes(net, recipe.bn_eval)
                order = tr[torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed)).numpy()]
                total, correct, n_ep = 0.0, 0, 0
                for b, part in enumerate(np.array_split(order, n_batches)):
                    t0 = time.perf_counter()
                    x = bank.normalize(bank.train_batch(part, recipe.augment), dev, runtime.channels_last)
                    target = y_t[part].to(dev)
                    with autocast(runtime):
                        out = net(x)
                        loss = loss_fn(out.float(), target)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    sched.step_update(num_updates=epoch * n_batches + b + 1)
                    t_steps += time.perf_counter() - t0
                    n_seen += len(part)
                    total += float(loss.detach()) * len(part)
                    correct += int((out.argmax(1) == target).sum())
                    n_ep += len(part)
                sched.step(epoch + 1)
                val_acc, val_loss = _evaluate(net, bank, y_t, val, runtime)
                row = {
                    "epoch": epoch + 1, "loss": total / max(1, n_ep), "train_acc": correct / max(1, n_ep),
                    "val_acc": val_acc, "val_loss": val_loss, "lr": float(opt.param_groups[-1]["lr"]),
                    "trainable": trainable, "seconds": time.perf_counter() - t_epoch,
                }
                result.history.append(row)
                score = (val_acc, -val_loss) if len(val) else (float(epoch), 0.0)
                if score > best_score:
                    best_score, best_state, bad = score, _cpu_state(net), 0
                    result.best_epoch = epoch + 1
                else:
                    bad += 1
                if len(val) and bad >= recipe.patience and epoch + 1 < recipe.epochs:
                    result.stopped_early = done = True
                done = done or epoch + 1 == recipe.epochs
                if state_path:
                    save_state(state_path, {
                        "version": STATE_VERSION, "identity": identity, "epoch": epoch + 1,
                        "net": _cpu_state(net), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else {},
                        "best": best_state, "best_score": list(best_score), "best_epoch": result.best_epoch,
                        "bad": bad, "done": done, "stopped_early": result.stopped_early,
                        "history": result.history,
                    })
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{val_acc:.3f}")
                log.info("epoch %d/%d loss %.4f val acc %.4f", epoch + 1, recipe.epochs, row["loss"], val_acc)
                if done:
                    break
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t_run
    result.images_per_second = n_seen / t_steps if t_steps > 0 else 0.0
    if best_state is not None:
        net.load_state_dict(best_state)
    return _finish(net, result)


def _finish(net: FineTuneNet, result: TrainResult) -> TrainResult:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return result
