"""The contrastive training loop: class-balanced batches, every pair in a batch, resumable state.

SetFit samples sentence *pairs* and encodes both sides of every pair, so a batch of 16 pairs
costs 32 forward and backward passes for 16 similarities. Here a step draws a class-balanced
batch of *texts* (:func:`sample_batch`) and scores every pair inside it: ``b`` passes give
``b (b - 1) / 2`` similarities. The loss is SetFit's cosine-similarity loss (squared error
between the cosine of two embeddings and 1 for a same-label pair, 0 otherwise), averaged
separately over the positive and the negative pairs and the two halves weighted equally: the
balanced pair sampling of SetFit without drawing the pairs one by one.

The batch of a step, and the dropout inside it, are drawn from generators seeded with
``(seed, step)``: the sampler has no other state, and a run resumed at step ``s`` draws what an
unbroken one would. Every ``checkpoint_every`` steps (and at the end) the trained weights, the
optimizer state, the step and the sampler's seed are written to ``state_path`` atomically (a
temporary file, then ``os.replace``); a run killed at any moment and started again with the
same arguments resumes after the last saved step.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepfeat.process_state import forked_torch_rng
from deepfeat.text_finetune.encoder import SentenceEncoder
from deepfeat.training_state import load_state, save_state

__all__ = ["STATE_VERSION", "TrainResult", "balanced_cosine_loss", "sample_batch", "train_contrastive"]

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class TrainResult:
    """What :func:`train_contrastive` did.

    Attributes
    ----------
    losses : list of float
        The loss of every step (resumed steps included).
    resumed_from : int
        Steps found done in the saved state (0: a fresh run).
    steps_run : int
        Steps this call ran.
    seconds : float
        Training time of this call.
    texts_per_second : float
        Texts through forward and backward per second of this call's steps.
    """

    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    steps_run: int = 0
    seconds: float = 0.0
    texts_per_second: float = 0.0


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step`` (batch and dropout), a function of ``(seed, step)`` only."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def sample_batch(codes: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-balanced batch with at least two texts of each class drawn.

    All texts when there are at most ``batch_size``; otherwise ``m = min(n_classes,
    batch_size // 2)`` classes drawn at random and ``batch_size // m`` texts of each (all of a
    class that has fewer), so every batch holds positive and negative pairs.
    """
    n = len(codes)
    if n <= batch_size:
        return np.arange(n)
    classes = np.unique(codes)
    m = max(1, min(len(classes), batch_size // 2))
    chosen = rng.choice(classes, size=m, replace=False)
    per = batch_size // m
    out = [rng.permutation(np.flatnonzero(codes == c))[:per] for c in chosen]
    return np.sort(np.concatenate(out))


def balanced_cosine_loss(emb: Any, codes: Any) -> Any:
    """Mean over positive pairs of ``(1 - cos)^2`` and over negative pairs of ``cos^2``, halved each.

    A batch with no positive (or no negative) pair uses the other half alone.
    """
    import torch

    z = torch.nn.functional.normalize(emb.float(), dim=1)
    sim = z @ z.T
    same = codes[:, None] == codes[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    pos, neg = same & upper, ~same & upper
    parts = []
    if pos.any():
        parts.append(((1.0 - sim[pos]) ** 2).mean())
    if neg.any():
        parts.append((sim[neg] ** 2).mean())
    return sum(parts) / len(parts)


def _lr_at(step: int, steps: int, lr: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction of the steps, then linear decay to 0."""
    w = max(1, math.ceil(warmup * steps)) if warmup > 0 else 0
    if step < w:
        return lr * (step + 1) / w
    return lr * max(0.0, (steps - step) / max(1, steps - w))


def train_contrastive(
    enc: SentenceEncoder,
    ids: list[list[int]],
    codes: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: float,
    weight_decay: float,
    freeze: int,
    seed: int,
    chunk: int,
    state_path: str | os.PathLike | None = None,
    identity: str = "",
    checkpoint_every: int = 10,
) -> TrainResult:
    """Tune ``enc.model`` in place on the tokenised texts ``ids`` with class indices ``codes``.

    Parameters
    ----------
    enc : SentenceEncoder
    ids : list of list of int
        Token ids of each training text (:meth:`SentenceEncoder.tokenize`).
    codes : ndarray of int
        Class index of each text.
    steps, batch_size, lr, warmup, weight_decay, freeze, seed
        See :class:`~deepfeat.text_finetune.ContrastiveTextClassifier`.
    chunk : int
        Texts per forward pass inside a step (the batch sorted by length, so each chunk is
        padded to a similar length); the loss still sees the whole batch.
    state_path : path, optional
        Where the training state is saved and resumed from.
    identity : str
        Identity of the run: a saved state with another identity is not resumed.
    checkpoint_every : int
        Steps between saves (the last step is always saved).

    Returns
    -------
    TrainResult
        ``enc.model`` holds the tuned weights, in eval mode, with gradients off.
    """
    import torch

    state_path = None if state_path is None else os.fspath(state_path)
    model = enc.model
    names = set(enc.trainable_names(freeze))
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    if not params or steps == 0:  # everything frozen, or nothing to do: the encoder as it is
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return TrainResult()
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    codes_t = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    result = TrainResult()

    start = 0
    saved = load_state(state_path, identity, STATE_VERSION)
    if saved is not None:
        model.load_state_dict(saved["weights"], strict=False)
        opt.load_state_dict(saved["opt"])
        start = int(saved["step"])
        result.losses = list(saved["losses"])
        result.resumed_from = start
        log.info("resuming contrastive fine-tuning after step %d of %d (%s)", start, steps, state_path)
    if state_path:
        for stale in glob.glob(glob.escape(state_path) + ".tmp-*"):
            with contextlib.suppress(OSError):
                os.remove(stale)

    def save(step: int) -> None:
        if state_path:
            save_state(state_path, {
                "version": STATE_VERSION, "identity": identity, "step": step,
                "weights": {n: p.detach().clone() for n, p in model.named_parameters() if n in names},
                "opt": opt.state_dict(), "losses": result.losses,
                "sampler": {"kind": "seeded per step", "seed": seed},
            })

    t_run, n_seen = time.perf_counter(), 0
    lengths = np.array([len(r) for r in ids])
    model.train()
    try:
        with forked_torch_rng():
            for step in range(start, steps):
                s = step_seed(seed, step)
                torch.manual_seed(s)  # dropout
                batch = sample_batch(np.asarray(codes), batch_size, np.random.default_rng(s))
                batch = batch[np.argsort(lengths[batch], kind="stable")]
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, steps, lr, warmup)
                emb = torch.cat([enc.forward([ids[i] for i in batch[c : c + chunk]])
                                 for c in range(0, len(batch), chunk)])
                loss = balanced_cosine_loss(emb, codes_t[torch.as_tensor(batch)])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                result.losses.append(float(loss.detach()))
                result.steps_run += 1
                n_seen += len(batch)
                if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                    save(step + 1)
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    result.seconds = time.perf_counter() - t_run
    result.texts_per_second = n_seen / result.seconds if result.steps_run else 0.0
    return result
