"""The training state of a resumable fine-tune (images and texts): written atomically,
read back only by the run it belongs to.

Kept apart from :mod:`deepfeat.finetune.train` (which imports timm) so that the text
fine-tune does not pay that import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["load_state", "save_state"]

log = logging.getLogger(__name__)


def save_state(path: str, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a kill leaves the old state or the new."""
    import torch

    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str | None, identity: str, version: int) -> dict[str, Any] | None:
    """The state at ``path`` if it belongs to this run (``identity``, ``version``), else ``None``:
    a missing, damaged or foreign state means starting again (logged)."""
    import torch

    if not path or not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file means: start again
        log.warning("training state %s unreadable (%s); starting from scratch", path, exc)
        return None
    if state.get("version") != version or state.get("identity") != identity:
        log.warning("training state %s belongs to another run; starting from scratch", path)
        return None
    return state
