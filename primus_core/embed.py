"""Embedding IMU arrays with an encoder: input reading (.npy/.npz/.csv), checks, resampling,
windowing and batched no-grad inference."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from .data import resample
from .errors import DataError


def read_input(path: str | Path, key: str | None = None) -> np.ndarray:
    """(N, C, T) windows or a (C, T) recording from .npy, .npz (``key`` or its only array) or
    .csv (one column per channel, an optional header row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path}: not a numeric .npy array ({exc})") from None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            if key is None and len(names) != 1:
                raise DataError(f"{path}: holds arrays {names}; choose one with --key")
            name = key or names[0]
            if name not in names:
                raise DataError(f"{path}: no array '{name}' (has {names})")
            return archive[name]
    if suffix == ".csv":
        return read_csv(path).T
    raise DataError(f"{path}: unsupported input type '{suffix}' (use .npy, .npz or .csv)")


def read_csv(path: Path) -> np.ndarray:
    """(T, C) float array from a CSV with one column per channel; names the bad line."""
    rows: list[list[float]] = []
    with path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                values = [float(cell) for cell in row]
            except ValueError:
                if line_no == 1 and not rows:
                    continue  # header
                raise DataError(f"{path}:{line_no}: non-numeric value in {row}") from None
            if rows and len(values) != len(rows[0]):
                raise DataError(f"{path}:{line_no}: {len(values)} columns, expected {len(rows[0])}")
            rows.append(values)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return np.asarray(rows, dtype=np.float32)


def prepare_windows(
    array: np.ndarray,
    *,
    channels: int,
    window: int,
    rate_hz: float,
    input_rate_hz: float | None = None,
    stride: int | None = None,
) -> np.ndarray:
    """Check an input array and turn it into (N, channels, window) float32 windows."""
    array = np.asarray(array)
    if array.size == 0:
        raise DataError("input is empty")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"input has dtype {array.dtype}; expected real numbers")
    if array.ndim not in (2, 3):
        raise DataError(f"input has shape {array.shape}; expected (N, C, T) or (C, T)")
    if array.shape[-2] != channels:
        raise DataError(
            f"input has {array.shape[-2]} channels (shape {array.shape}); "
            f"the model expects {channels}"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"input has {int(bad.sum())} NaN/inf values (first at index {first})")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"input values up to {float(np.abs(array).max()):g} overflow float32")
    if input_rate_hz and input_rate_hz != rate_hz:
        array = resample(array, input_rate_hz, rate_hz, axis=-1).astype(np.float32)
    length = array.shape[-1]
    if length < window:
        raise DataError(
            f"input has {length} samples at {rate_hz:g} Hz; a window needs {window} "
            f"({window / rate_hz:g} s)"
        )
    if array.ndim == 3:
        return np.ascontiguousarray(array[..., :window])
    stride = stride or window
    starts = range(0, length - window + 1, stride)
    return np.stack([array[:, s : s + window] for s in starts])


@torch.no_grad()
def embed_windows(
    encoder: torch.nn.Module,
    windows: np.ndarray,
    head: str = "mmcl",
    batch_size: int = 256,
    device: torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Batched inference: (N, C, T) -> (N, D) float32 outputs of ``head``."""
    if head not in encoder.output_sizes:
        raise DataError(f"the model has no head '{head}' (has: {', '.join(encoder.output_sizes)})")
    device = device or next(encoder.parameters()).device
    encoder = encoder.to(device).eval()
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(windows), batch_size)
    for start in tqdm(starts, desc="embed", unit="batch", disable=not progress):
        batch = torch.from_numpy(np.array(windows[start : start + batch_size], dtype=np.float32))
        batch = batch.to(device, non_blocking=True)
        out.append(encoder(batch)[head].float().cpu())
    result = torch.cat(out).numpy()
    bad = ~np.isfinite(result).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        peak = float(np.abs(np.asarray(windows[first], np.float64)).max())
        raise DataError(
            f"{int(bad.sum())} window(s) give non-finite embeddings (first: window {first}, "
            f"values up to {peak:g}); check the input's units and scale"
        )
    return result
