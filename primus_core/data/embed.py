"""Embedding IMU arrays with an encoder: input reading (.npy/.npz/.csv), checks, resampling,
windowing and batched no-grad inference; ``embed`` is the one-call Python form
(``primus_core.embed``)."""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, PrimusError
from .windows import resample


def read_input(path: str | Path, key: str | None = None) -> np.ndarray:
    """(N, C, T) windows or a (C, T) recording from .npy, .npz (``key`` or its only array) or
    .csv (one column per channel, an optional header row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:  # memory-mapped: windows are read batch by batch, never the whole file at once
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:  # EOFError: an empty or truncated file
            raise DataError(
                f"{path}: not a readable numeric .npy array ({_first_line(exc)})"
            ) from None
    if suffix == ".npz":
        try:
            return read_npz(path, key)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"{path}: not a readable numeric .npz archive ({_first_line(exc)})"
            ) from None
    if suffix == ".csv":
        return read_csv(path).T
    raise DataError(f"{path}: unsupported input type '{suffix}' (use .npy, .npz or .csv)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else "") or type(exc).__name__


def read_npz(path: Path, key: str | None) -> np.ndarray:
    """The array ``key`` (or the only array) of an .npz archive, never unpickling."""
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if key is None and len(names) != 1:
            raise DataError(f"{path}: holds arrays {names}; choose one with --key")
        name = key or names[0]
        if name not in names:
            raise DataError(f"{path}: no array '{name}' (has {names})")
        return archive[name]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv(path: Path) -> np.ndarray:
    """(T, C) float array from a UTF-8 CSV (a BOM is fine) with one column per channel. The first
    row is a header only when none of its cells is a number; any other non-numeric cell is an
    error naming its line."""
    rows: list[list[float]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for line_no, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                values = [_number(cell) for cell in row]
                if None in values:
                    if line_no == 1 and all(v is None for v in values):
                        continue  # header
                    raise DataError(f"{path}:{line_no}: non-numeric value in {row}")
                if rows and len(values) != len(rows[0]):
                    raise DataError(
                        f"{path}:{line_no}: {len(values)} columns, expected {len(rows[0])}"
                    )
                rows.append(values)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    return np.asarray(rows, dtype=np.float64)


def prepare_windows(
    array: np.ndarray,
    *,
    channels: int,
    window: int,
    rate_hz: float,
    input_rate_hz: float | None = None,
    stride: int | None = None,
) -> np.ndarray:
    """Check an input array and turn it into (N, channels, window) windows: a view of the input
    (a memory map too) where no resampling is asked for, in the input's numeric dtype, which
    ``embed_windows`` converts to float32 batch by batch; so a large input is never copied, and
    windows that overlap (``stride`` < ``window``) take no memory of their own."""
    array = np.asarray(array)
    if array.size == 0:
        raise DataError("input is empty")
    if np.iscomplexobj(array):
        raise DataError(f"input has complex dtype {array.dtype}; expected real numbers")
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"input has dtype {array.dtype}; expected real numbers")
    if input_rate_hz is not None and not (math.isfinite(input_rate_hz) and input_rate_hz > 0):
        raise DataError(f"input rate must be a positive number of Hz (got {input_rate_hz})")
    if stride is not None and stride < 1:
        raise DataError(f"stride must be at least 1 sample (got {stride})")
    if array.ndim not in (2, 3):
        raise DataError(f"input has shape {array.shape}; expected (N, C, T) or (C, T)")
    if array.shape[-2] != channels:
        raise DataError(
            f"input has {array.shape[-2]} channels (shape {array.shape}); "
            f"the model expects {channels}{transposed_hint(array, channels)}"
        )
    check_finite(array, "input has")
    if np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize > 4:
        check_finite(array, "input has float32 overflow:", as_float32=True)
    if input_rate_hz is not None and input_rate_hz != rate_hz:
        array = resampled_float32(array, input_rate_hz, rate_hz)
        check_finite(array, "input resampled to float32 has")
    length = array.shape[-1]
    if length < window:
        raise DataError(
            f"input has {length} samples at {rate_hz:g} Hz; a window needs {window} "
            f"({window / rate_hz:g} s)"
        )
    if array.ndim == 3:
        return array[..., :window]
    every = np.lib.stride_tricks.sliding_window_view(array, window, axis=-1)  # (C, starts, window)
    return every[:, :: stride or window].transpose(1, 0, 2)


CHECK_BLOCK_BYTES = 64 << 20  # how much of an input the checks and resampling read at a time


def blocks(array: np.ndarray, axis: int):
    """(start, block) along ``axis``, each block about ``CHECK_BLOCK_BYTES`` of ``array``, so
    that a memory-mapped input is read a block at a time, never whole."""
    length = array.shape[axis]
    step = max(1, CHECK_BLOCK_BYTES * length // max(array.nbytes, 1))
    for start in range(0, length, step):
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, start + step)
        yield start, array[tuple(index)]


def resampled_float32(array: np.ndarray, rate_from: float, rate_to: float) -> np.ndarray:
    """``array`` resampled along its last axis, in float32. (N, C, T) windows are resampled a
    block of windows at a time into the result (each window on its own, so the same values):
    resampling's float64 temporaries stay the size of a block; a (C, T) recording is resampled
    whole."""
    with np.errstate(over="ignore", invalid="ignore"):
        if array.ndim != 3:
            return resample(array, rate_from, rate_to, axis=-1).astype(np.float32)
        out = None
        for start, block in blocks(array, 0):
            block = resample(block, rate_from, rate_to, axis=-1)
            if out is None:
                out = np.empty((len(array), *block.shape[1:]), np.float32)
            out[start : start + len(block)] = block
        return out


def check_finite(array: np.ndarray, what: str, as_float32: bool = False) -> None:
    """Raise a DataError naming how many values are NaN/inf (``as_float32``: become so in
    float32) and where the first one is, reading the input by ``blocks`` along the first axis
    (the last for a 2-D recording)."""
    axis = array.ndim - 1 if array.ndim == 2 else 0
    count, first = 0, None
    for start, block in blocks(array, axis):
        if as_float32:
            with np.errstate(over="ignore", invalid="ignore"):
                block = block.astype(np.float32)
        bad = ~np.isfinite(block)
        found = int(bad.sum())
        if found:
            count += found
            where = [int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape)]
            where[axis] += start
            first = min(first or tuple(where), tuple(where))
    if count:
        raise DataError(f"{what} {count} NaN/inf values (first at index {first})")


INFERENCE_DTYPES = ("fp32", "bf16", "int8")


class InferenceEncoder(torch.nn.Module):
    """An encoder run in another precision: inputs cast to ``dtype`` on the way in, every output
    back to float32 on the way out; the encoder's contract and output sizes are kept."""

    def __init__(self, encoder: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.encoder = encoder
        self.dtype = dtype
        self.output_sizes = encoder.output_sizes
        self.imu_contract = getattr(encoder, "imu_contract", None)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.encoder(x.to(self.dtype))
        return {k: v.float() for k, v in out.items()}


def for_inference(
    encoder: torch.nn.Module, dtype: str = "fp32", device: torch.device | None = None
) -> torch.nn.Module:
    """The encoder in eval mode on ``device``, in the precision ``dtype``: ``fp32`` (the encoder
    itself, moved and put in eval mode), ``bf16`` (on a CPU, a copy with its GRUs' recurrent
    products in bfloat16 (``gru_scan.Bf16GRU``) and the rest in float32, which runs faster there
    than bfloat16 convolutions and pools; elsewhere, or for an encoder without such GRUs, a
    bfloat16 copy: weights and activations) or ``int8`` (a copy with its GRUs' recurrent products (``gru_scan.Int8GRU``) and its Linear
    layers (torch.ao.quantization.quantize_dynamic) dynamically quantised to int8; CPU only).
    A copy leaves the caller's encoder as it was: weights, device and mode."""
    import copy

    if dtype not in INFERENCE_DTYPES:
        raise DataError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)} (got {dtype!r})")
    device = device or next(encoder.parameters()).device
    if dtype == "fp32":
        return encoder.to(device).eval()
    if dtype == "int8" and device.type != "cpu":
        raise DataError(f"dtype int8 (dynamic quantisation) runs on the CPU, not on {device}")
    from .gru_scan import Bf16GRU, Int8GRU, scannable

    encoder = copy.deepcopy(encoder).to(device).eval()
    grus = [(p, n, c) for p in encoder.modules() for n, c in p.named_children() if scannable(c)]
    if dtype == "bf16" and (device.type != "cpu" or not grus):
        return InferenceEncoder(encoder.to(torch.bfloat16), torch.bfloat16).eval()
    if dtype == "bf16":  # on a CPU: the GRUs' products in bfloat16, the rest float32
        for parent, name, child in grus:
            setattr(parent, name, Bf16GRU(child))
        return InferenceEncoder(encoder, torch.float32).eval()
    import warnings

    from torch.ao.quantization import quantize_dynamic

    for parent, name, child in grus:  # GRUs first: quantize_dynamic would take them too
        setattr(parent, name, Int8GRU(child))
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        quantised = quantize_dynamic(encoder, {torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8)
    return InferenceEncoder(quantised, torch.float32).eval()


@torch.no_grad()
def batched_outputs(
    encoder: torch.nn.Module,
    windows: Any,
    head: str,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
) -> np.ndarray:
    """(N, D) float32 outputs of ``head`` of an encoder ready for inference (``for_inference``)
    for (N, C, T) ``windows`` (anything that slices into arrays: a memory map too), batch by
    batch on ``device``. Each batch's vectors are copied into the result as they come: an
    output that is a view of a larger tensor does not keep it alive, and no second copy of all
    vectors is made at the end."""
    from tqdm.auto import tqdm

    size = encoder.output_sizes[head]
    vectors = np.empty((len(windows), size), dtype=np.float32)
    starts = range(0, len(windows), batch_size)
    for start in tqdm(starts, desc="embed", unit="batch", disable=not progress):
        batch = torch.from_numpy(np.array(windows[start : start + batch_size], dtype=np.float32))
        out = encoder(batch.to(device, non_blocking=True))[head]
        if tuple(out.shape) != (len(batch), size):
            raise PrimusError(
                f"the encoder's '{head}' output has shape {tuple(out.shape)} for {len(batch)} "
                f"windows; it declares {size} values per window (output_sizes)"
            )
        vectors[start : start + len(batch)] = out.float().cpu().numpy()
        del batch, out  # the next batch runs without this one's tensors
    return vectors


def embed_windows(
    encoder: torch.nn.Module,
    windows: np.ndarray,
    head: str = "mmcl",
    batch_size: int = 256,
    device: torch.device | None = None,
    progress: bool = False,
    dtype: str = "fp32",
) -> np.ndarray:
    """Batched inference: (N, C, T) -> (N, D) float32 outputs of ``head``, computed in
    ``dtype`` (fp32, bf16 or int8; see ``for_inference``)."""
    if head not in encoder.output_sizes:
        raise DataError(f"the model has no head '{head}' (has: {', '.join(encoder.output_sizes)})")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1 (got {batch_size})")
    device = device or next(encoder.parameters()).device
    encoder = for_inference(encoder, dtype, device)
    vectors = batched_outputs(encoder, windows, head, batch_size, device, progress)
    bad_rows = ~np.isfinite(vectors).all(axis=1)
    if bad_rows.any():
        first = int(np.argmax(bad_rows))
        peak = float(np.abs(np.asarray(windows[first], dtype=np.float64)).max())
        raise DataError(
            f"the model gave NaN/inf embeddings for {int(bad_rows.sum())} of {len(vectors)} "
            f"windows (first: window {first}, whose largest |value| is {peak:.3g}); "
            "check the input's scale and units"
        )
    return vectors


def transposed_hint(array: np.ndarray, channels: int) -> str:
    """A hint when a 2-D array looks like (T, C) instead of (C, T)."""
    if array.ndim == 2 and array.shape[-1] == channels and array.shape[-2] != channels:
        return (
            f"; it looks like (T, C) = {array.shape}: transpose it (layout='TC' in "
            "primus_core.embed, array.T with numpy)"
        )
    return ""


def rate_hint(array: np.ndarray, window: int, rate_hz: float) -> str | None:
    """When (N, C, T) windows are longer or shorter than the model's, the length suggests another
    rate (a 5 s window at 100 Hz has 500 samples where the model wants 250 at 50 Hz)."""
    if array.ndim != 3 or array.shape[-1] == window:
        return None
    guess = rate_hz * array.shape[-1] / window
    return (
        f"the input windows have {array.shape[-1]} samples but the model's have {window} at "
        f"{rate_hz:g} Hz ({window / rate_hz:g} s); if they span {window / rate_hz:g} s, the "
        f"input is at {guess:g} Hz: pass --rate {guess:g} (rate_hz={guess:g} in Python) to "
        "resample instead of keeping the first samples"
    )


def embed(
    model: Any,
    array: Any,
    *,
    rate_hz: float | None = None,
    layout: str = "CT",
    head: str = "mmcl",
    stride: int | None = None,
    batch_size: int = 256,
    device: str | None = None,
    dtype: str = "fp32",
) -> np.ndarray:
    """Embed IMU data with ``model`` (an encoder, a model directory, a zoo name or an
    ``hf-hub:ORG/NAME[@REV]`` id): ``array`` is (C, T) or (T, C) per ``layout`` for one
    recording (resampled from ``rate_hz`` to the model's rate, cut into windows every ``stride``
    samples, by default one window apart), or (N, C, T) windows; returns (N, D) float32 vectors
    of ``head`` ("emb", "ssl" or "mmcl"), computed in ``dtype`` ("fp32", "bf16", or "int8":
    dynamic quantisation of the GRU and Linear layers, CPU only)."""
    import warnings

    if layout not in ("CT", "TC"):
        raise DataError(
            f"layout must be 'CT' (channels, time) or 'TC' (time, channels), not {layout!r}"
        )
    if isinstance(model, (str, Path)):
        from ..zoo.hub import load_pretrained

        model = load_pretrained(model, device=device)
    array = np.asarray(array)
    if layout == "TC":
        array = np.swapaxes(array, -1, -2)
    contract = model.imu_contract
    if rate_hz is None:
        hint = rate_hint(array, contract.window_samples, contract.rate_hz)
        if hint:
            warnings.warn(hint, stacklevel=2)
    windows = prepare_windows(
        array,
        channels=contract.num_channels,
        window=contract.window_samples,
        rate_hz=contract.rate_hz,
        input_rate_hz=rate_hz,
        stride=stride,
    )
    dev = torch.device(device) if device is not None and device != "auto" else None
    return embed_windows(model, windows, head=head, batch_size=batch_size, device=dev, dtype=dtype)
