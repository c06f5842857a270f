"""IMU windows: the window contract, conversion into it (units, channels, anti-aliased
resampling, windowing, zero-padding), input validation, and the memory-mapped prepared cache.

Dataset adapters (plugins/primus_datasets) read recordings in their native form; everything
here turns those recordings into windows of an :class:`~primus_core.config.IMUContract` with
whole-array numpy/scipy operations (no per-window Python loops), and stores them once so that
training and evaluation read them with zero per-window parsing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ..config import ComponentRef, IMUContract
from ..errors import DataError
from ..paths import remove_dead_temps, sha256_file
from .catalog import CACHE_FORMAT, DatasetInfo, default_cache_dir, read_meta

STANDARD_GRAVITY = 9.80665

# unit -> (canonical unit, factor): value_in_canonical = value * factor
UNIT_FACTORS: dict[str, tuple[str, float]] = {
    "m/s^2": ("m/s^2", 1.0),
    "g": ("m/s^2", STANDARD_GRAVITY),
    "mg": ("m/s^2", STANDARD_GRAVITY / 1000.0),
    "rad/s": ("rad/s", 1.0),
    "deg/s": ("rad/s", math.pi / 180.0),
}


# ---------------------------------------------------------------------------------- records


@dataclass
class Recording:
    """One continuous IMU recording in its native form, as an adapter read it.

    ``data`` is (samples, channels) in ``units``; ``labels`` is per-sample (-1 unknown) or None.
    Channel names use the contract's vocabulary (acc_x ... gyro_z); a contract channel the
    recording lacks is zero-filled only when ``fill_missing`` is set.
    """

    data: np.ndarray
    rate_hz: float
    channels: list[str]
    units: list[str]
    subject: int
    source: str
    labels: np.ndarray | None = None
    fill_missing: bool = False


@dataclass
class WindowSet:
    """Windows in an encoder's contract (see docs/internals.md "Datasets")."""

    imu: np.ndarray  # float32 (N, C, T)
    labels: np.ndarray  # int64 (N,), -1 when unlabelled
    class_names: list[str]
    subjects: np.ndarray  # int64 (N,)
    narrations: list[str] | None = None
    videos: list | None = None
    dataset: str = ""

    def __len__(self) -> int:
        return int(self.imu.shape[0])

    def subset(self, idx: np.ndarray | Sequence[int]) -> WindowSet:
        idx = np.asarray(idx, dtype=np.int64)
        pick = (lambda seq: [seq[i] for i in idx]) if len(idx) else (lambda seq: [])
        return WindowSet(
            imu=np.asarray(self.imu[idx]),
            labels=self.labels[idx],
            class_names=list(self.class_names),
            subjects=self.subjects[idx],
            narrations=pick(self.narrations) if self.narrations is not None else None,
            videos=pick(self.videos) if self.videos is not None else None,
            dataset=self.dataset,
        )


def empty_windows(
    contract: IMUContract,
    class_names: Sequence[str] = (),
    dataset: str = "",
    with_text: bool = False,
    with_videos: bool = False,
) -> WindowSet:
    return WindowSet(
        imu=np.zeros((0, contract.num_channels, contract.window_samples), np.float32),
        labels=np.zeros(0, np.int64),
        class_names=list(class_names),
        subjects=np.zeros(0, np.int64),
        narrations=[] if with_text else None,
        videos=[] if with_videos else None,
        dataset=dataset,
    )


def concat_windows(parts: Sequence[WindowSet], contract: IMUContract) -> WindowSet:
    """Concatenate window sets of one dataset (narrations/videos kept when every part has them)."""
    parts = list(parts)
    if not parts:
        return empty_windows(contract)
    first = parts[0]
    texts = (
        None if any(p.narrations is None for p in parts) else sum((p.narrations for p in parts), [])
    )
    videos = None if any(p.videos is None for p in parts) else sum((p.videos for p in parts), [])
    return WindowSet(
        imu=np.concatenate([p.imu for p in parts]).astype(np.float32, copy=False),
        labels=np.concatenate([p.labels for p in parts]).astype(np.int64, copy=False),
        class_names=list(first.class_names),
        subjects=np.concatenate([p.subjects for p in parts]).astype(np.int64, copy=False),
        narrations=texts,
        videos=videos,
        dataset=first.dataset,
    )


# ------------------------------------------------------------------------------ validation
def _where(row: int, first_line: int | None) -> str:
    return f"line {row + first_line}" if first_line is not None else f"sample {row}"


def check_finite(data: np.ndarray, source: str, first_line: int | None = None) -> None:
    """Raise DataError naming the first run of rows holding NaN or inf."""
    bad = ~np.isfinite(data)
    if bad.ndim > 1:
        bad = bad.any(axis=tuple(range(1, bad.ndim)))
    if not bad.any():
        return
    start = int(np.argmax(bad))
    rest = bad[start:]
    run = int(np.argmin(rest)) if not rest.all() else len(rest)
    raise DataError(
        f"{source}: non-finite values (NaN/inf) in {run} row(s) starting at "
        f"{_where(start, first_line)}"
    )


def readable_time(seconds: float) -> str:
    """A time in seconds as people read it: a UTC date-time for Unix epochs (after 1990),
    otherwise seconds with millisecond precision."""
    if abs(seconds) >= 631_152_000:  # 1990-01-01 in Unix seconds
        stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
        return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d} UTC"
    return f"{seconds:.3f} s"


def check_timestamps(
    t: np.ndarray, source: str, first_line: int | None = None, *, scale: float | None = None
) -> None:
    """Timestamps must be finite and strictly increasing. With ``scale`` (seconds per unit of
    ``t``), times in the error are shown readably (epochs as UTC date-times)."""
    t = np.asarray(t, dtype=np.float64)
    check_finite(t, source, first_line)
    diffs = np.diff(t)
    bad = np.flatnonzero(diffs <= 0)
    if bad.size:
        row = int(bad[0]) + 1

        def show(value: float) -> str:
            return f"{value:g}" if scale is None else readable_time(value * scale)

        kind = "duplicated" if diffs[bad[0]] == 0 else "non-monotonic (goes back)"
        raise DataError(
            f"{source}: {kind} timestamp at {_where(row, first_line)} "
            f"({show(float(t[row]))} after {show(float(t[row - 1]))})"
        )


def check_columns(data: np.ndarray, expected: int, source: str) -> None:
    if data.ndim != 2 or data.shape[1] != expected:
        got = data.shape[1] if data.ndim == 2 else data.ndim
        raise DataError(f"{source}: expected {expected} columns, got {got}")


def read_csv(
    path: Path | str,
    columns: Sequence[str],
    *,
    delimiter: str = ",",
    header: bool = True,
    text: str | None = None,
    source: str | None = None,
) -> tuple[np.ndarray, int]:
    """Parse a numeric CSV with exactly ``len(columns)`` columns.

    Returns (float64 array (rows, columns), line number of the first data row). Errors name the
    file and the line: wrong header, wrong column count, unparsable number, NaN/inf.
    """
    source = source or str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DataError(f"{source}: cannot read ({exc.strerror or exc})") from None
    lines = text.splitlines()
    first_line = 1
    if header:
        if not lines:
            raise DataError(f"{source}: empty file (expected a header line)")
        names = [c.strip().strip('"') for c in lines[0].split(delimiter)]
        if names != list(columns):
            raise DataError(
                f"{source}: line 1: expected header {delimiter.join(columns)!r}, "
                f"got {lines[0].strip()!r}"
            )
        first_line = 2
    body = "\n".join(lines[first_line - 1 :])
    try:
        data = np.loadtxt(
            io.StringIO(body),
            delimiter=None if delimiter == " " else delimiter,
            ndmin=2,
            dtype=np.float64,
        )
    except ValueError:
        _raise_first_bad_line(lines, first_line, len(columns), delimiter, source)
        raise
    if data.size == 0:
        data = data.reshape(0, len(columns))
    if data.shape[1] != len(columns):
        raise DataError(
            f"{source}: line {first_line}: expected {len(columns)} columns, got {data.shape[1]}"
        )
    check_finite(data, source, first_line)
    return data, first_line


def _raise_first_bad_line(
    lines: list[str], first_line: int, ncols: int, delimiter: str, source: str
) -> None:
    for number in range(first_line, len(lines) + 1):
        line = lines[number - 1]
        if not line.strip():
            continue
        cells = line.split() if delimiter == " " else line.split(delimiter)
        if len(cells) != ncols:
            raise DataError(f"{source}: line {number}: expected {ncols} columns, got {len(cells)}")
        for column, cell in enumerate(cells, start=1):
            if not cell.strip():
                raise DataError(f"{source}: line {number}: column {column} is empty")
            try:
                float(cell)
            except ValueError:
                raise DataError(
                    f"{source}: line {number}: not a number: {cell.strip()!r}"
                ) from None


# ------------------------------------------------------------------------------ conversion
def unit_factor(unit_from: str, unit_to: str) -> float:
    """Multiplier from ``unit_from`` to ``unit_to`` (g -> m/s^2, deg/s -> rad/s, ...)."""
    try:
        canon_from, f_from = UNIT_FACTORS[unit_from]
        canon_to, f_to = UNIT_FACTORS[unit_to]
    except KeyError as exc:
        raise DataError(
            f"unknown unit {exc.args[0]!r}; known units: {', '.join(UNIT_FACTORS)}"
        ) from None
    if canon_from != canon_to:
        raise DataError(f"cannot convert {unit_from} to {unit_to}")
    return f_from / f_to


def to_contract_channels(
    data: np.ndarray,
    channels: Sequence[str],
    units: Sequence[str],
    contract: IMUContract,
    *,
    fill_missing: bool = False,
    source: str = "",
) -> np.ndarray:
    """Select and reorder channels by name and convert units: (T, C_native) -> (T, C_contract)."""
    out = np.zeros((data.shape[0], contract.num_channels), dtype=np.float64)
    index = {name: i for i, name in enumerate(channels)}
    for j, (name, unit) in enumerate(zip(contract.channels, contract.units, strict=True)):
        if name not in index:
            if fill_missing:
                continue
            raise DataError(f"{source}: has no channel {name!r} (has: {', '.join(channels)})")
        i = index[name]
        out[:, j] = data[:, i] * unit_factor(units[i], unit)
    return out


def resample(data: np.ndarray, rate_from: float, rate_to: float, axis: int = 0) -> np.ndarray:
    """Anti-aliased polyphase resampling of a whole array (scipy.signal.resample_poly)."""
    if math.isclose(rate_from, rate_to, rel_tol=1e-9):
        return np.asarray(data, dtype=np.float64)
    from scipy.signal import resample_poly

    ratio = Fraction(rate_to / rate_from).limit_denominator(1000)
    if ratio.numerator == 0:
        raise DataError(f"cannot resample {rate_from:g} Hz to {rate_to:g} Hz")
    # padtype="line": the filter sees a linear continuation at both ends instead of zeros, so
    # a gravity offset or a trend does not ring at the recording's edges
    return resample_poly(
        np.asarray(data, dtype=np.float64),
        ratio.numerator,
        ratio.denominator,
        axis=axis,
        padtype="line",
    )


def resampled_length(n: int, rate_from: float, rate_to: float) -> int:
    if math.isclose(rate_from, rate_to, rel_tol=1e-9):
        return n
    ratio = Fraction(rate_to / rate_from).limit_denominator(1000)
    return -(-n * ratio.numerator // ratio.denominator)


def sliding_windows(
    x: np.ndarray, window: int, stride: int, min_fill: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Cut (T, C) into (N, C, window) windows every ``stride`` samples. When the samples after
    the last full window (or a whole signal shorter than a window) amount to at least
    ``min_fill`` of a window, one more window starts a stride later, zero-padded at the end.
    Returns (windows float32, start sample of each window)."""
    n = x.shape[0]
    starts = np.arange(0, n - window + 1, stride) if n >= window else np.zeros(0, np.int64)
    covered = int(starts[-1]) + window if starts.size else 0
    if n - covered >= max(1, math.ceil(min_fill * window)):  # uncovered tail: one padded window
        starts = np.append(starts, int(starts[-1]) + stride if starts.size else 0)
    return gather_windows(x, starts.astype(np.int64), window), starts.astype(np.int64)


def gather_windows(x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """(T, C) and start indices -> (N, C, window) float32; past the end is zero-padded."""
    n, c = x.shape
    if len(starts) == 0:
        return np.zeros((0, c, window), np.float32)
    idx = starts[:, None] + np.arange(window)[None, :]
    inside = idx < n
    out = x[np.minimum(idx, max(n - 1, 0))]  # (N, window, C)
    out[~inside] = 0.0
    return np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)


def centred_starts(centres_s: np.ndarray, rate_hz: float, n: int, window: int) -> np.ndarray:
    """Start indices of windows centred on ``centres_s`` (seconds), clamped to the recording."""
    start = np.round(np.asarray(centres_s, np.float64) * rate_hz).astype(np.int64) - window // 2
    return np.clip(start, 0, max(n - window, 0))


def label_runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, label) of each run of equal labels, skipping -1."""
    if labels.size == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], edges, [labels.size]])
    return [
        (int(a), int(b), int(labels[a]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if labels[a] >= 0
    ]


def min_native_samples(rate_hz: float, contract: IMUContract, min_fill: float) -> int:
    """The fewest samples, at the recording's own ``rate_hz``, that fill ``min_fill`` of one
    contract window: a shorter recording gives no window."""
    return max(1, math.ceil(min_fill * contract.window_samples * rate_hz / contract.rate_hz))


def recording_windows(
    rec: Recording, contract: IMUContract, *, stride_s: float | None = None, min_fill: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one recording and cut it into contract windows.

    Labelled recordings are cut per run of equal labels so that every window has one label.
    Returns (imu (N, C, T) float32, labels (N,) int64).
    """
    data = np.asarray(rec.data)
    check_columns(data, len(rec.channels), rec.source)
    check_finite(data, rec.source)
    window = contract.window_samples
    min_native = min_native_samples(rec.rate_hz, contract, min_fill)
    if data.shape[0] < min_native:
        raise DataError(
            f"{rec.source}: recording has {data.shape[0]} samples "
            f"({data.shape[0] / rec.rate_hz:.2f} s at {rec.rate_hz:g} Hz), shorter "
            f"than the {min_fill:g} of a {contract.window_seconds:g} s window needed"
        )
    x = to_contract_channels(
        data, rec.channels, rec.units, contract, fill_missing=rec.fill_missing, source=rec.source
    )
    stride = max(1, round((stride_s or contract.window_seconds) * contract.rate_hz))
    if rec.labels is None:
        segments = [(0, x.shape[0], -1)]
    else:
        segments = label_runs(np.asarray(rec.labels, np.int64))
    imus, labels = [], []
    for a, b, label in segments:
        seg = resample(x[a:b], rec.rate_hz, contract.rate_hz)
        win, _ = sliding_windows(seg, window, stride, min_fill)
        imus.append(win)
        labels.append(np.full(len(win), label, np.int64))
    if not imus:
        return np.zeros((0, contract.num_channels, window), np.float32), np.zeros(0, np.int64)
    return np.concatenate(imus), np.concatenate(labels)


# --------------------------------------------------------------------------- narrations
NARRATION_TEMPLATES = (
    "a person is {}",
    "someone {}",
    "the person is {}",
    "a person {} for a while",
    "the wearer is {}",
    "somebody is {}",
)


def weak_narrations(
    labels: np.ndarray,
    phrases: Sequence[str],
    key: str,
    templates: Sequence[str] = NARRATION_TEMPLATES,
) -> list[str]:
    """Narrations built from labels: one of several templates per window, chosen by a stable
    hash of ``key`` and the window's position (reproducible, independent of load order).
    ``phrases[label]`` is the activity as a verb phrase ("walking up the stairs")."""
    out = []
    for i, label in enumerate(np.asarray(labels).tolist()):
        if label < 0:
            out.append("")
            continue
        t = zlib.crc32(f"{key}:{i}".encode()) % len(templates)
        out.append(templates[t].format(phrases[label]))
    return out


# ------------------------------------------------------------------------------ adapters
class SkipReport:
    """What an adapter left out ("skipped") or kept after a repair ("kept"), counted by reason
    and unit (window, take, video, recording, row), with the first place it happened."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, bool], dict[str, Any]] = {}

    def add(
        self, reason: str, count: int = 1, unit: str = "window", where: str = "", kept=False
    ) -> None:
        if count <= 0:
            return
        row = self._rows.setdefault(
            (reason, unit, kept),
            {"reason": reason, "unit": unit, "count": 0, "example": where, "kept": kept},
        )
        row["count"] += int(count)

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self._rows.values(), key=lambda r: (r["kept"], -r["count"], r["reason"]))

    def skipped(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if not r["kept"]]

    def clear(self) -> None:
        self._rows.clear()


def skip_summary(rows: Sequence[dict[str, Any]]) -> str:
    """'3 windows: reason; 1 take: reason' for error messages."""
    parts = [
        f"{r['count']} {r['unit']}{'s' if r['count'] != 1 else ''}: {r['reason']}"
        + (f" (first: {r['example']})" if r["example"] else "")
        for r in rows
        if not r["kept"]
    ]
    return "; ".join(parts) if parts else "nothing skipped"


class DatasetAdapter:
    """Base of the dataset adapters: ``sources()`` lists units of work (files, takes), ``read``
    turns one into windows; ``load`` is all of them. ``version`` changes invalidate caches.

    Whatever an adapter leaves out goes to ``self.report`` (``skip``) with its reason, so that
    ``primus data prepare`` can show it and ``--strict`` can refuse it. ``fingerprint_patterns``
    (globs under ``config.root``) name the source files whose names, sizes and modification
    times enter the cache key, so changed data is prepared again."""

    info: DatasetInfo
    version: str = "1"
    fingerprint_patterns: tuple[str, ...] = ()

    def __init__(self, config: BaseModel):
        self.config = config
        self.report = SkipReport()

    def skip(self, reason: str, count: int = 1, unit: str = "window", where: str = "") -> None:
        self.report.add(reason, count, unit, where)

    def note(self, reason: str, count: int = 1, unit: str = "row", where: str = "") -> None:
        """Something repaired and kept (sorted rows, filled cells): reported, never an error."""
        self.report.add(reason, count, unit, where, kept=True)

    def source_files(self) -> list[Path]:
        root = getattr(self.config, "root", None)
        if root is None or not Path(root).is_dir():
            return []
        found = {p for pattern in self.fingerprint_patterns for p in Path(root).glob(pattern)}
        return sorted(p for p in found if p.is_file())

    def source_fingerprint(self) -> str | None:
        """sha256 of (path, size, mtime) of every source file; None when there are none."""
        files = self.source_files()
        if not files:
            return None
        digest = hashlib.sha256()
        for path in files:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    @property
    def stride_s(self) -> float | None:
        return getattr(self.config, "stride_seconds", None)

    def sources(self) -> list[Any]:
        raise NotImplementedError

    def read(self, source: Any, contract: IMUContract) -> WindowSet:
        raise NotImplementedError

    def load(self, contract: IMUContract | None = None) -> WindowSet:
        contract = contract or IMUContract()
        self.report.clear()
        return concat_windows([self.read(s, contract) for s in self.sources()], contract)

    def windows_of(
        self,
        rec: Recording,
        contract: IMUContract,
        *,
        phrases: Sequence[str] | None,
        with_text: bool = True,
    ) -> WindowSet:
        """Standard path for recordings: windows, labels, subjects and weak narrations."""
        imu, labels = recording_windows(
            rec, contract, stride_s=self.stride_s, min_fill=getattr(self.config, "min_fill", 0.5)
        )
        texts = None
        if with_text and phrases is not None:
            texts = weak_narrations(labels, phrases, key=f"{self.info.name}:{rec.source}")
        return WindowSet(
            imu=imu,
            labels=labels,
            class_names=list(self.info.classes),
            subjects=np.full(len(labels), rec.subject, np.int64),
            narrations=texts,
            dataset=self.info.name,
        )


def missing_root_error(info: DatasetInfo, root: Path | None, what: str = "") -> DataError:
    where = f"{root} does not exist" if root else "no root given (--root PATH)"
    extra = f"; expected {what}" if what else ""
    return DataError(
        f"dataset '{info.name}': {where}{extra}. Get it from {info.url} "
        f"(licence: {info.licence}) and pass its folder as root"
    )


# ------------------------------------------------------------------------- splits, few-shot
def split_by_subject(
    ws: WindowSet, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with whole subjects on one side, chosen reproducibly from ``seed``.

    At least one subject goes to each side when there are two or more subjects.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    subjects = np.asarray(ws.subjects)
    unique = np.unique(subjects)
    if unique.size < 2:
        raise DataError(
            f"dataset '{ws.dataset}': cannot split by subject, only {unique.size} subject(s)"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(unique)
    n_test = min(max(1, round(test_fraction * unique.size)), unique.size - 1)
    test_mask = np.isin(subjects, order[:n_test])
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def few_shot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k indices per class (all of a class that has fewer), sampled reproducibly; -1 ignored."""
    if k <= 0:
        raise DataError(f"k must be positive, got {k}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        picked.append(rng.choice(members, size=min(k, members.size), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


# --------------------------------------------------------------------------- prepared cache
ARRAYS = ("imu", "labels", "subjects")


def _as_ref(ref: ComponentRef | str | dict) -> ComponentRef:
    if isinstance(ref, ComponentRef):
        return ref
    if isinstance(ref, str):
        return ComponentRef(type=ref)
    return ComponentRef.model_validate(ref)


def create_adapter(ref: ComponentRef | str | dict) -> DatasetAdapter:
    from ..components import create

    ref = _as_ref(ref)
    return create("dataset", ref.type, **ref.params)


def cache_key(adapter: DatasetAdapter, contract: IMUContract) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "dataset": adapter.info.name,
        "adapter_version": adapter.version,
        "params": adapter.config.model_dump(mode="json"),
        "contract": contract.model_dump(mode="json"),
    }
    fingerprint = adapter.source_fingerprint()
    if fingerprint is not None:  # changed source files: a new cache, without --force
        payload["source"] = fingerprint
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(
    adapter: DatasetAdapter, contract: IMUContract, cache_dir: Path | None = None
) -> Path:
    return (
        Path(cache_dir or default_cache_dir())
        / f"{adapter.info.name}-{cache_key(adapter, contract)}"
    )


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header padded to a fixed 128 bytes (so it can be rewritten in place)."""
    desc = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(s) for s in shape),
    }
    text = repr(desc)
    pad = 128 - 10 - len(text) - 1
    if pad < 0:
        raise DataError(f"array shape {shape} too large for the cache header")
    return b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little") + (text + " " * pad + "\n").encode()


class _NpyAppender:
    """Write an .npy file chunk by chunk without knowing the row count up front."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), row_shape
        self.rows = 0
        self.file = open(path, "wb")
        self.file.write(_npy_header(self.dtype, (0, *row_shape)))

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.shape[1:] != self.row_shape:
            raise DataError(f"window shape {array.shape[1:]} differs from {self.row_shape}")
        self.file.write(array.tobytes())
        self.rows += array.shape[0]

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.file.close()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="src",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
    )


def prepare(
    ref: ComponentRef | str | dict,
    contract: IMUContract | None = None,
    cache_dir: Path | str | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    strict: bool = False,
    workers: int = 1,
    staged: Path | None = None,
) -> Path:
    """Materialise a dataset's windows once into the memory-mapped cache; returns its folder.
    Sources are read by ``workers`` processes (or taken from the ranks' ``staged`` folder, see
    primus_core.data.shard.prepare_sharded) and written in source order: the same bytes always.

    Written into a temporary folder next to the final one, then renamed: an interrupted or
    failed prepare leaves nothing half-written under the final name. With ``strict``, anything
    the adapter skipped is an error (and no cache is kept).
    """
    contract = contract or IMUContract()
    adapter = create_adapter(ref)
    final = cache_path(adapter, contract, Path(cache_dir) if cache_dir else None)
    if final.exists() and not force:
        if strict:
            _refuse_skips(adapter.info.name, read_meta(final).get("report", {}).get("rows", []))
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(final.parent, f".tmp-{final.name}-")  # left by killed prepares
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{os.getpid()}-", dir=final.parent))
    try:
        meta = _write_cache(adapter, contract, tmp, progress, workers, staged)
        if strict:
            _refuse_skips(adapter.info.name, meta["report"]["rows"])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists() and force:
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp)  # another process prepared the same cache meanwhile: keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _refuse_skips(dataset: str, rows: Sequence[dict[str, Any]]) -> None:
    if any(not r["kept"] for r in rows):
        raise DataError(f"dataset '{dataset}': --strict and {skip_summary(rows)}")


def _write_cache(
    adapter: DatasetAdapter,
    contract: IMUContract,
    folder: Path,
    progress: bool,
    workers: int = 1,
    staged: Path | None = None,
) -> dict[str, Any]:
    from .pool import read_sources, read_staged

    t0 = time.perf_counter()
    adapter.report.clear()
    sources = adapter.sources()
    row = (contract.num_channels, contract.window_samples)
    writers = {
        "imu": _NpyAppender(folder / "imu.npy", np.float32, row),
        "labels": _NpyAppender(folder / "labels.npy", np.int64, ()),
        "subjects": _NpyAppender(folder / "subjects.npy", np.int64, ()),
    }
    texts: list[str] | None = []
    videos: list | None = []
    class_names = list(adapter.info.classes)
    try:
        with _progress(len(sources), f"prepare {adapter.info.name}", progress) as bar:
            parts = (
                read_staged(adapter, staged, len(sources))
                if staged is not None
                else read_sources(adapter, sources, contract, workers)
            )
            for _, part in parts:
                writers["imu"].append(part.imu)
                writers["labels"].append(part.labels)
                writers["subjects"].append(part.subjects)
                texts = (
                    None if texts is None or part.narrations is None else texts + part.narrations
                )
                videos = None if videos is None or part.videos is None else videos + part.videos
                class_names = part.class_names or class_names
                bar.update(1)
    finally:
        for writer in writers.values():
            writer.close()
    count = writers["imu"].rows
    if count == 0:
        raise DataError(
            f"dataset '{adapter.info.name}': no windows were produced from {len(sources)} "
            f"source(s); skipped: {skip_summary(adapter.report.rows())}"
        )
    lists = {"narrations": texts, "videos": videos}
    for name, values in lists.items():
        if values is not None and len(values) == count:
            (folder / f"{name}.json").write_text(json.dumps(values))
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
    }
    subjects = np.load(folder / "subjects.npy")
    return {
        "format": CACHE_FORMAT,
        "dataset": adapter.info.name,
        "params": adapter.config.model_dump(mode="json"),
        "contract": contract.model_dump(mode="json"),
        "windows": count,
        "class_names": class_names,
        "subjects": int(np.unique(subjects).size),
        "sources": len(sources),
        "report": {
            "kept": {"sources": len(sources), "windows": count},
            "rows": adapter.report.rows(),
        },
        "prepare_seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "info": adapter.info.as_dict(),
        "files": files,
    }


def verify_cache(
    folder: Path, meta: dict[str, Any] | None = None, *, checksums: bool = True
) -> None:
    """Raise DataError when a file of a prepared cache is missing, resized or altered."""
    folder = Path(folder)
    meta = meta or read_meta(folder)
    for name, expected in meta["files"].items():
        path = folder / name
        hint = f"delete {folder} and run `primus data prepare {meta['dataset']}` again"
        if not path.is_file():
            raise DataError(f"prepared cache {folder} is corrupt: {name} is missing; {hint}")
        if path.stat().st_size != expected["bytes"]:
            raise DataError(
                f"prepared cache {folder} is corrupt: {name} has "
                f"{path.stat().st_size} bytes, expected {expected['bytes']}; {hint}"
            )
        if checksums and sha256_file(path) != expected["sha256"]:
            raise DataError(
                f"prepared cache {folder} is corrupt: {name} fails its sha256 checksum; {hint}"
            )


def open_cache(folder: Path | str, *, verify: bool = True) -> WindowSet:
    """Open a prepared cache: the IMU array is memory-mapped read-only (no parsing per window)."""
    folder = Path(folder)
    meta = read_meta(folder)
    verify_cache(folder, meta, checksums=verify)
    try:
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    except ValueError as exc:
        raise DataError(f"prepared cache {folder} is corrupt: {exc}") from None
    n = meta["windows"]
    if any(arrays[name].shape[0] != n for name in ARRAYS):
        raise DataError(f"prepared cache {folder} is corrupt: arrays disagree on the window count")
    lists = {}
    for name in ("narrations", "videos"):
        path = folder / f"{name}.json"
        lists[name] = json.loads(path.read_text()) if path.exists() else None
    return WindowSet(
        imu=arrays["imu"],
        labels=np.asarray(arrays["labels"]),
        class_names=list(meta["class_names"]),
        subjects=np.asarray(arrays["subjects"]),
        narrations=lists["narrations"],
        videos=lists["videos"],
        dataset=meta["dataset"],
    )


def load_windows(
    ref: ComponentRef | str | dict,
    contract: IMUContract | None = None,
    cache_dir: Path | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
) -> WindowSet:
    """The windows of a dataset from its prepared cache (prepared first when missing)."""
    folder = prepare(ref, contract, cache_dir, progress=progress)
    return open_cache(folder, verify=verify)


def iter_batches(ws: WindowSet, batch_size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(ws), batch_size):
        yield np.asarray(ws.imu[start : start + batch_size])
