"""The tuned encoder of a :class:`ContrastiveTextClassifier` as a checkpoint file.

``deepfeat fit --finetune`` on texts tunes the encoder contrastively, then searches heads on
the tuned encoder exactly as on the frozen one: the tuned weights become a ``checkpoint`` of
the text backbone they were tuned from (``TransferClassifier(TextEmbedder("minilm",
checkpoint=...))``), so the cache keys the tuned rows apart from the frozen ones (the
checkpoint's content hash is its weights identifier), and predict, evaluate, serve and
export see an ordinary model. The image fine-tune does the same
(:class:`~deepfeat.finetune.FineTuneClassifier`'s ``checkpoint_``).
"""

from __future__ import annotations

import os

from sklearn.utils.validation import check_is_fitted

from deepfeat.text_finetune.estimator import ContrastiveTextClassifier

__all__ = ["save_encoder_checkpoint"]


def save_encoder_checkpoint(clf: ContrastiveTextClassifier, path: str | os.PathLike) -> str:
    """Write the whole tuned encoder's state dict to ``path`` (atomically).

    Parameters
    ----------
    clf : ContrastiveTextClassifier
        Fitted.
    path : str or path-like
        The file to write (``torch.save`` format, loaded strictly by name by the backbone
        registry).

    Returns
    -------
    str
        The absolute path written.
    """
    import torch

    check_is_fitted(clf, "encoder_state_")
    enc = clf._tuned_encoder()  # the base encoder with the tuned parameters loaded
    state = {k: v.detach().cpu().contiguous() for k, v in enc.model.state_dict().items()}
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
