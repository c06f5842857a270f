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


HEAP_BLOCKS_UP_TO = 256 << 20  # bytes: the CPU training step's GRU buffers are 34-67 MB each


def reuse_freed_memory() -> bool:
    """Keep blocks up to 256 MiB in glibc's heap once freed, for reuse, instead of returning each
    block over 32 MiB to the kernel: a CPU training step at batch 256 allocates about 170 MB of
    such blocks (the GRU's saved states), which otherwise come back as fresh pages, 47,000 page
    faults per step (about 12 % of it) for the same peak memory. Process-wide; the trainer
    calls it for CPU runs. False where the C library has no ``mallopt`` (not glibc)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, HEAP_BLOCKS_UP_TO)) and bool(
        mallopt(m_trim_threshold, 2 * HEAP_BLOCKS_UP_TO)
    )
