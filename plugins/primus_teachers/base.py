"""What every teacher shares: device choice, lazy loading, batching, normalisation."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from primus_core.errors import ComponentError

from .config import TeacherConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ComponentError(f"teacher device '{name}' is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ComponentError(f"teacher device '{name}' asked for CUDA but no GPU is available")
    return device


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def freeze(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model.eval().requires_grad_(False)
    return model.to(device)


def folder_digest(
    folder: Path, patterns: Sequence[str] = ("*.json", "*.safetensors", "*.txt")
) -> str:
    """sha256 (16 hex) of a local model folder's config, vocabulary and weight files."""
    digest = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (e.g. the unused tower of a CLIPModel checkpoint)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class Teacher:
    """A frozen embedding model loaded on first use. Subclasses set ``modality`` and implement
    ``_load()``, ``_embed_batch(batch) -> Tensor (B, D)`` and ``_identity()``."""

    modality: str = ""
    preprocessing_version: int = 1

    def __init__(self, config: TeacherConfig):
        self.config = config
        resolve_device(config.device)  # a bad device is a mistake to report now, not mid-run
        self._loaded = False
        self._identity_cache: str | None = None

    # ---- public interface (docs/internals.md "Teacher")
    @property
    def identity(self) -> str:
        """Stable across processes: teacher type, model id + revision, preprocessing version."""
        if self._identity_cache is None:
            self._identity_cache = f"{self._identity()}|pre{self.preprocessing_version}"
        return self._identity_cache

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    def has_input(self, x: Any) -> bool:
        """Whether a window's input exists (None / "" mean the window has none)."""
        return x is not None and not (isinstance(x, str) and not x)

    def embed(self, inputs: Sequence[Any]) -> torch.Tensor:
        """(N, D) float32 on the CPU, L2-normalised, computed in batches of ``batch_size``.
        A row of NaN is an input the teacher skipped (video teachers with skip_bad_videos)."""
        inputs = list(inputs)
        if not inputs:
            return torch.zeros(0, self.output_size)
        return torch.cat(list(self.embed_batches(inputs)))

    def embed_batches(
        self, inputs: Sequence[Any], batch_size: int | None = None
    ) -> Iterator[torch.Tensor]:
        """``embed`` one batch at a time (what the cache stores as it goes)."""
        inputs = list(inputs)
        self.load()
        for part in chunks(inputs, batch_size or self.config.batch_size):
            with torch.inference_mode():
                emb = l2_normalise(self._embed_batch(list(part))).cpu()
            yield emb

    def load(self) -> Teacher:
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity})"

    # ---- for subclasses
    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def _identity(self) -> str:
        raise NotImplementedError

    def _load(self) -> None:
        raise NotImplementedError

    def _embed_batch(self, batch: list[Any]) -> torch.Tensor:
        raise NotImplementedError
