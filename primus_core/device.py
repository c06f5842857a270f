"""Which torch device a run uses."""

from __future__ import annotations

import torch

from .errors import PrimusError


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a device this
    machine does not have is a clear error, not a failure mid-run."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise PrimusError(
            f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PrimusError(f"device {device!r}: no CUDA GPU is available; use cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise PrimusError(f"device {device!r}: this machine has {count} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise PrimusError(f"device {device!r}: MPS is not available; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise PrimusError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev
