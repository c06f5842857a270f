"""Training checkpoints: written atomically, read with weights_only unpickling, checked for
compatibility with the run that resumes them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import PrimusError

FORMAT = "primus-train-checkpoint/1"


class CheckpointError(PrimusError):
    """A checkpoint is corrupt or belongs to another run."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, compat: str) -> dict[str, Any]:
    """Read a checkpoint; ``compat`` is the run's compatibility hash (recipe without the fields
    that may change on resume)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: corrupt or unreadable checkpoint ({str(exc)[:160]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a primus training checkpoint")
    if state.get("compat") != compat:
        raise CheckpointError(
            f"{path}: written by a different recipe (hash {state.get('compat')}, this run "
            f"{compat}); resume with the same recipe and --set values, or use another --out"
        )
    return state
