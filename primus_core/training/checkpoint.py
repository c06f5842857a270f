"""Training checkpoints: written atomically, read with weights_only unpickling, checked for
compatibility with the run that resumes them."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import PrimusError
from ..paths import remove_dead_temps

FORMAT = "primus-train-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
# what a run writes into its folder before its first checkpoint (cleaned when the folder is reused)
RUN_FILES = ("recipe.yaml", "env.json", "metrics.jsonl", "tensorboard")
RUN_TEMPS = (f".{CHECKPOINT}.tmp-", ".model.tmp-", ".model.old-")


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


def prepare_run_dir(out: Path, resume: bool) -> list[str]:
    """Make ``out`` ready for a run; returns what was cleaned. Temporary files of writers that
    died are removed. Without --resume, a folder holding a checkpoint is refused, and one left by
    a run that stopped before its first checkpoint is emptied of that run's files and reused; a
    folder with anything else in it (a model, files of the user's) is never touched."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file; --out must be a folder")
    cleaned = [p.name for p in remove_dead_temps(out, f".{CHECKPOINT}.tmp-")]
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise CheckpointError(
                f"{out}: no checkpoint to resume from (the run stopped before its first one); "
                "start it again without --resume"
            )
        return cleaned
    out.mkdir(parents=True, exist_ok=True)
    if (out / CHECKPOINT).exists():
        raise CheckpointError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    entries = sorted(out.iterdir())
    foreign = [
        p.name for p in entries if p.name not in RUN_FILES and not p.name.startswith(RUN_TEMPS)
    ]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise CheckpointError(
            f"{out} has no checkpoint but holds {shown}, which a run did not leave there; "
            "choose another --out"
        )
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        cleaned.append(path.name)
    return cleaned


def trim_metrics(path: Path, rows: int | None, step: int) -> int:
    """Cut metrics.jsonl back to what was logged up to the checkpoint a run resumes from (its
    first ``rows`` lines; for checkpoints without that count, the rows of steps <= ``step``), so
    that the resumed run does not repeat steps. Returns the number of rows kept."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if rows is not None:
        keep = lines[:rows]
    else:
        keep = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if keep != lines:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(keep))
        os.replace(tmp, path)
    return len(keep)


def _row_step(line: str) -> int | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None  # a line cut short by a kill
    return row.get("step") if isinstance(row, dict) else None
