"""EgoExo4D and Ego4D: head-worn IMU with narrations, read from local copies exactly as the
official downloaders leave them (both need a licence agreement; nothing here downloads them).
The layouts, with the source of every fact, are in docs/datasets.md.

Every window lies on the video's (take's) timeline: EgoExo4D IMU on the Aria device clock is
moved onto the take with ``captures/<capture>/timesync.csv``; Ego4D IMU rows carry the
canonical video time. Whatever is left out is reported (``DatasetAdapter.skip``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from primus_core.config import IMUContract
from primus_core.data.windows import (
    DatasetAdapter,
    WindowSet,
    check_columns,
    check_finite,
    check_timestamps,
    empty_windows,
    missing_root_error,
    read_csv,
    resample,
    to_contract_channels,
)
from primus_core.errors import DataError
from primus_core.paths import primus_home

from .config import Ego4DConfig, EgoExo4DConfig
from .info import INFOS, SIX, SIX_UNITS
from .safe_pickle import load_restricted

PRIMUS_IMU_COLUMNS = ["t_s", *SIX]
ARIA_IMU_STREAM = "1202-1"
# The reference code's dataset/egoexo4d/bad_imu.txt (Nokia-Bell-Labs/pretrained-imu-encoders,
# Clear BSD licence): 82 lines, some repeated, keys on its whole-second window grid.
REFERENCE_BAD_WINDOWS = Path(__file__).parent / "data" / "egoexo4d_bad_imu_reference.txt"
_PUNCT = str.maketrans("", "", string.punctuation)


# ------------------------------------------------------------------------- narration text
def clean_narration(text: str, max_chars: int = 128) -> str:
    """The project's cleaning: drop the "#C C " prefix, "#unsure" -> "something", strip
    punctuation, lowercase, collapse spaces, at most 128 characters."""
    text = text.strip()
    if text.startswith("#C C "):
        text = text[len("#C C ") :]
    text = re.sub(r"#unsure", "something", text, flags=re.IGNORECASE)
    text = " ".join(text.translate(_PUNCT).lower().split())
    return text[:max_chars]


def clean_narration_reference(text: str) -> str:
    """The reference code's cleaning, step by step in its order (it removes every capital C,
    and strips punctuation only at the ends)."""
    text = text.replace("#C C ", "").replace("C", "").replace("#unsure", "something")
    return text.strip().strip(string.punctuation).lower()[:128]


CLEANERS: dict[str, Callable[[str], str]] = {
    "primus": clean_narration,
    "reference": clean_narration_reference,
}


# ------------------------------------------------------------------------------ windowing
def reference_window(t: float, half: float, duration: float) -> tuple[int, int] | None:
    """The reference's window for a narration at ``t`` s: [0, 2w] when t <= 2w, [d - 2w, d]
    when t + 2w >= d, else [t - w, t + w]; both ends floored to whole seconds; None (skipped)
    unless it lies inside [0, d] and lasts exactly 2w."""
    if t <= 2 * half:
        start, end = 0.0, 2 * half
    elif t + 2 * half >= duration:
        start, end = duration - 2 * half, duration
    else:
        start, end = t - half, t + half
    start, end = math.floor(start), math.floor(end)
    if start < 0 or end > duration or end - start != 2 * half:
        return None
    return start, end


def read_bad_windows(path: Path) -> set[str]:
    """A bad-window list: ``<uid>_<start>_<end>`` one a line, or a JSON list of such keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the bad_windows list ({exc.strerror})") from None
    if text.lstrip().startswith("["):
        try:
            return {str(k).strip() for k in json.loads(text)}
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    return {line.strip() for line in text.splitlines() if line.strip()}


class TimedIMU:
    """IMU at the contract rate on a video/take timeline: sample j is at (k0 + j) / rate_hz
    seconds, cut to [0, duration]."""

    def __init__(self, x: np.ndarray, k0: int, rate_hz: float):
        self.x, self.k0, self.rate_hz = x, k0, rate_hz

    def windows(self, starts_k: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(windows (N, C, window) float32, fraction of each window the IMU covers); samples
        outside the IMU are zeros."""
        idx = np.asarray(starts_k, np.int64)[:, None] - self.k0 + np.arange(window)[None, :]
        inside = (idx >= 0) & (idx < len(self.x))
        out = self.x[np.clip(idx, 0, max(len(self.x) - 1, 0))]
        out[~inside] = 0.0
        return np.ascontiguousarray(out.transpose(0, 2, 1), np.float32), inside.mean(axis=1)


def timed_imu(
    t_s: np.ndarray,
    data: np.ndarray,
    duration: float,
    contract: IMUContract,
    source: str,
    first_line: int | None = None,
) -> TimedIMU | None:
    """IMU with times ``t_s`` (seconds on the video's timeline), cut to [0, duration], on a
    uniform grid of the contract rate whose samples fall on whole multiples of 1 / rate.
    None when the IMU does not overlap [0, duration]."""
    t_s = np.asarray(t_s, np.float64)
    check_columns(data, len(SIX), source)
    check_finite(data, source, first_line)
    check_timestamps(t_s, source, first_line)
    if len(t_s) < 2:
        raise DataError(f"{source}: only {len(t_s)} IMU sample(s)")
    rate = 1.0 / float(np.median(np.diff(t_s)))
    rate = float(round(rate)) if rate > 10 else rate
    lo = max(int(np.searchsorted(t_s, 0.0)) - 1, 0)
    hi = min(int(np.searchsorted(t_s, duration, side="right")) + 1, len(t_s))
    t_s, data = t_s[lo:hi], data[lo:hi]
    rc = contract.rate_hz
    begin, end = max(t_s[0], 0.0), min(t_s[-1], duration)
    if len(t_s) < 2 or end - begin < 1.0 / rate:
        return None
    k0 = math.ceil(begin * rc - 1e-6)
    g0 = k0 / rc
    grid = g0 + np.arange(int(np.floor((end - g0) * rate + 1e-6)) + 1) / rate
    native = np.stack([np.interp(grid, t_s, data[:, c]) for c in range(data.shape[1])], axis=1)
    x = to_contract_channels(native, SIX, SIX_UNITS, contract, source=source)
    x = resample(x, rate, rc)[: int(np.floor((end - g0) * rc + 1e-6)) + 1]
    return TimedIMU(x, k0, rc)


class NarratedAdapter(DatasetAdapter):
    """Windows tied to timestamped narrations (EgoExo4D, Ego4D): placement, skips, videos."""

    unit = "window"

    def bad_windows(self) -> set[str]:
        if not hasattr(self, "_bad"):
            path = self.config.bad_windows
            if path is not None and str(path) == "reference":
                path = REFERENCE_BAD_WINDOWS
            self._bad = read_bad_windows(path) if path is not None else set()
        return self._bad

    def place(
        self, uid: str, times: list[float], duration: float, contract: IMUContract, where: str
    ) -> tuple[list[int], np.ndarray]:
        """(indices of the narrations kept, window start of each on the contract grid); the
        others are reported as skipped."""
        window, rc = contract.window_samples, contract.rate_hz
        seconds = window / rc
        n_take = int(np.floor(duration * rc + 1e-6))
        keep, starts = [], []
        for i, t in enumerate(times):
            if self.config.windowing == "reference":
                if abs(seconds - round(seconds)) > 1e-9:
                    raise DataError(
                        f"windowing 'reference' needs whole-second windows; the contract's "
                        f"window lasts {seconds:g} s"
                    )
                span = reference_window(t, seconds / 2, duration)
                if span is None:
                    self.skip("reference window not 2w whole seconds inside the take", where=where)
                    continue
                start_k = span[0] * round(rc)
            else:
                start_k = min(max(round((t - seconds / 2) * rc), 0), max(n_take - window, 0))
            first = start_k / rc
            key = f"{uid}_{math.floor(first + 1e-9)}_{math.floor(first + seconds + 1e-9)}"
            if key in self.bad_windows():
                self.skip("listed in bad_windows", where=key)
                continue
            keep.append(i)
            starts.append(start_k)
        return keep, np.asarray(starts, np.int64)

    def cut(
        self,
        imu: TimedIMU,
        keep: list[int],
        starts: np.ndarray,
        contract: IMUContract,
        where: str,
    ) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Windows for the placed narrations; windows the IMU covers less than ``min_fill`` of
        are skipped. Returns (windows, kept narration indices, their starts)."""
        windows, coverage = imu.windows(starts, contract.window_samples)
        full = coverage >= self.config.min_fill - 1e-9
        self.skip(
            f"IMU covers less than min_fill ({self.config.min_fill:g}) of the window",
            int((~full).sum()),
            where=where,
        )
        return windows[full], [k for k, ok in zip(keep, full, strict=True) if ok], starts[full]

    def videos(
        self, path: Path | None, starts: np.ndarray, contract: IMUContract
    ) -> list[dict[str, Any]]:
        """{path, start_s, end_s}: exactly the IMU window, on the video's clock."""
        rc, seconds = contract.rate_hz, contract.window_seconds
        return [
            {
                "path": str(path) if path is not None else None,
                "start_s": round(k / rc, 6),
                "end_s": round(k / rc + seconds, 6),
            }
            for k in starts.tolist()
        ]


def _load_json(path: Path, dataset: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"dataset '{dataset}': {path} is missing") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None


def _empty(contract: IMUContract, classes: list[str], dataset: str) -> WindowSet:
    return empty_windows(contract, classes, dataset, with_text=True, with_videos=True)


# ------------------------------------------------------------------------------- EgoExo4D
_SCENARIO_WORDS = [
    (("covid", "pcr"), 0),
    (("bike",), 1),
    (("climb", "boulder"), 2),
    (("soccer", "basketball"), 3),
    (("cpr",), 4),
    (("cook", "omelet", "salad", "sushi"), 5),
    (("danc",), 6),
    (("music", "guitar", "piano", "violin"), 7),
]


def egoexo_scenario(take: dict) -> int:
    """The 8 PRIMUS scenario labels from a take's task names and folder name (-1: none)."""
    text = " | ".join(
        str(take.get(k, "")).lower() for k in ("parent_task_name", "task_name", "take_name")
    )
    for words, label in _SCENARIO_WORDS:
        if any(w in text for w in words):
            return label
    return -1


class EgoExo4D(NarratedAdapter):
    info = INFOS["egoexo4d"]
    version = "2"
    fingerprint_patterns = (
        "takes.json",
        "annotations/atomic_descriptions_*.json",
        "annotations/splits.json",
        "captures/*/timesync.csv",
        "takes/*/*.vrs",
        "takes/*/processed_imu.pkl",
        "takes/*/frame_aligned_videos/*_214-1.mp4",
        "takes/*/frame_aligned_videos/downscaled/448/*_214-1.mp4",
        "primus_imu/*",
    )

    def __init__(self, config: EgoExo4DConfig):
        super().__init__(config)
        self._timesync: dict[Path, tuple[list[str], list[list[str]]]] = {}

    def _root(self) -> Path:
        root = self.config.root
        if root is None or not root.is_dir():
            raise missing_root_error(self.info, root, "takes.json and annotations/")
        return root

    def source_files(self) -> list[Path]:
        files = super().source_files()
        if self.config.imu_dir is not None and self.config.imu_dir.is_dir():
            files += sorted(p for p in self.config.imu_dir.iterdir() if p.is_file())
        return files

    # ---------------------------------------------------------------- what to read
    def sources(self) -> list[dict]:
        root = self._root()
        takes = {t["take_uid"]: t for t in _load_json(root / "takes.json", self.info.name)}
        split_of: dict[str, str] = {}
        splits_json = root / "annotations" / "splits.json"
        if splits_json.is_file():
            split_of = _load_json(splits_json, self.info.name).get("take_uid_to_split", {})
        files = [root / "annotations" / f"atomic_descriptions_{s}.json" for s in self.config.splits]
        if not any(f.is_file() for f in files):
            raise DataError(
                f"dataset 'egoexo4d': none of {', '.join(str(f) for f in files)} exists "
                f"(download with `egoexo -o ROOT --parts annotations`)"
            )
        excluded = {e for e in self.config.exclude if "@" not in e}
        participants: dict[str, int] = {}
        out = []
        for split, path in zip(self.config.splits, files, strict=True):
            if not path.is_file():
                continue
            annotations = _load_json(path, self.info.name).get("annotations", {})
            for uid, raters in sorted(annotations.items()):
                raters = raters[:1] if self.config.annotators == "first" else raters
                texts = self._descriptions(uid, raters, path)
                if not texts:
                    continue
                where = f"take {uid}"
                if uid in excluded:
                    self.skip("take listed in exclude", len(texts), where=where)
                elif uid not in takes:
                    self.skip("take not in takes.json", len(texts), where=f"{where} ({path})")
                elif split_of.get(uid, split).lower() != split:
                    reason = f"annotations/splits.json puts the take in another split than {split}"
                    self.skip(reason, len(texts), where=where)
                else:
                    take = takes[uid]
                    who = str(take.get("participant_uid", uid))
                    subject = participants.setdefault(who, len(participants))
                    out.append({"take": take, "descriptions": texts, "subject": subject})
        return out

    def _descriptions(self, uid: str, raters: list, path: Path) -> list[tuple[float, str]]:
        out = []
        for rater in raters:
            items = rater.get("descriptions") or []
            if rater.get("rejected") and not self.config.include_rejected:
                self.skip("annotation marked rejected", len(items), where=f"take {uid}")
                continue
            for item in items:
                try:
                    out.append((float(item["timestamp"]), str(item.get("text") or "")))
                except (KeyError, TypeError, ValueError):
                    self.skip("description without a numeric timestamp", where=f"{path} {uid}")
        return out

    # ---------------------------------------------------------------- one take
    def read(self, source: dict, contract: IMUContract) -> WindowSet:
        take, items = source["take"], source["descriptions"]
        uid = take["take_uid"]
        empty = _empty(contract, list(self.info.classes), self.info.name)
        loaded = self.take_imu(take, len(items))
        if loaded is None:
            return empty
        t_s, imu, where, first_line = loaded
        duration = float(take.get("duration_sec") or t_s[-1])
        timed = timed_imu(t_s, imu, duration, contract, where, first_line)
        if timed is None:
            self.skip("IMU does not overlap the take", len(items), where=where)
            return empty
        drop = {float(e.split("@", 1)[1]) for e in self.config.exclude if e.startswith(f"{uid}@")}
        chosen = [i for i, (t, _) in enumerate(items) if t not in drop]
        self.skip("description listed in exclude", len(items) - len(chosen), where=f"take {uid}")
        times = [items[i][0] for i in chosen]
        keep, starts = self.place(uid, times, duration, contract, f"take {uid}")
        windows, keep, starts = self.cut(timed, keep, starts, contract, where)
        if not keep:
            return empty
        clean = CLEANERS[self.config.cleaning]
        n = len(keep)
        return WindowSet(
            imu=windows,
            labels=np.full(n, egoexo_scenario(take), np.int64),
            class_names=list(self.info.classes),
            subjects=np.full(n, source["subject"], np.int64),
            narrations=[clean(items[chosen[k]][1]) for k in keep],
            videos=self.videos(self.ego_video(take), starts, contract),
            dataset=self.info.name,
        )

    def ego_camera(self, take: dict) -> str | None:
        """The capture's ego Aria camera (is_ego in takes.json); without camera metadata, the
        one Aria camera whose VRS (or else ego video) the take folder holds."""
        cameras = (take.get("capture") or {}).get("cameras") or []
        for cam in cameras:
            cam_id = str(cam.get("cam_id", ""))
            if cam.get("is_ego") and (
                str(cam.get("device_type", "")).lower() == "aria" or cam_id.startswith("aria")
            ):
                return cam_id
        folder = self._take_dir(take)
        names = {p.name.split("_noimagestreams")[0] for p in folder.glob("*_noimagestreams.vrs")}
        if not names:
            videos = folder / "frame_aligned_videos"
            found = [
                *videos.glob("aria*_214-1.mp4"),
                *videos.glob("downscaled/448/aria*_214-1.mp4"),
            ]
            names = {p.name.split("_214-1")[0] for p in found}
        return names.pop() if len(names) == 1 else None

    def _take_dir(self, take: dict) -> Path:
        return self._root() / (take.get("root_dir") or f"takes/{take.get('take_name', '')}")

    def ego_video(self, take: dict) -> Path | None:
        aria = self.ego_camera(take)
        if aria is None:
            return None
        folder = self._take_dir(take) / "frame_aligned_videos"
        full = folder / f"{aria}_214-1.mp4"
        small = folder / "downscaled" / "448" / full.name
        choices = [small, full] if self.config.video == "downscaled" else [full]
        return next((p for p in choices if p.is_file()), None)

    def take_imu(self, take: dict, count: int) -> tuple[np.ndarray, np.ndarray, str, Any] | None:
        """(seconds on the take timeline, IMU (N, 6), source, first data line or None) of a
        take from, in this order:
        the user's per-take file, processed_imu.pkl, the ego camera's VRS. None: skipped."""
        uid = take["take_uid"]
        user = self._user_file(uid)
        if user is not None:
            if user.suffix == ".npz":
                return (*read_primus_npz(user), str(user), None)
            table, first_line = read_csv(user, PRIMUS_IMU_COLUMNS)
            return table[:, 0], table[:, 1:], str(user), first_line
        folder = self._take_dir(take)
        pkl = folder / "processed_imu.pkl"
        aria = self.ego_camera(take)
        vrs = folder / f"{aria}_noimagestreams.vrs" if aria else None
        if pkl.is_file():
            t_ns, imu = read_processed_pkl(pkl)
            where = str(pkl)
        elif vrs is not None and vrs.is_file():
            t_ns, imu = extracted_vrs_imu(vrs, uid)
            where = str(vrs)
        else:
            what = f"{vrs.name}" if vrs is not None else "the ego Aria camera's VRS"
            message = (
                f"take {uid} has no IMU: no {self.imu_dir() or 'imu_dir'}/{uid}.npz|.csv, "
                f"no {pkl}, no {what}"
            )
            if self.config.missing_imu == "error":
                raise DataError(f"dataset 'egoexo4d': {message}")
            self.skip(
                "take has no IMU (no per-take file, processed_imu.pkl or VRS)",
                count,
                where=str(folder),
            )
            return None
        start_ns = self.take_start_ns(take, aria, count)
        if start_ns is None:
            return None
        return (t_ns - start_ns).astype(np.float64) / 1e9, imu, where, None

    def imu_dir(self) -> Path | None:
        if self.config.imu_dir is not None:
            return self.config.imu_dir
        default = self._root() / "primus_imu"
        return default if default.is_dir() else None

    def _user_file(self, uid: str) -> Path | None:
        folder = self.imu_dir()
        if folder is None:
            return None
        return next(
            (p for p in (folder / f"{uid}.npz", folder / f"{uid}.csv") if p.is_file()), None
        )

    def take_start_ns(self, take: dict, aria: str | None, count: int) -> int | None:
        """The take's first frame on the Aria device clock: timesync.csv row
        timesync_start_idx + 1, column <aria>_214-1_capture_timestamp_ns."""
        capture = take.get("capture") or {}
        folder = capture.get("root_dir") or f"captures/{capture.get('capture_name', '')}"
        path = self._root() / folder / "timesync.csv"
        index = take.get("timesync_start_idx")
        if aria is None or index is None or not path.is_file():
            missing = (
                "no ego Aria camera in takes.json"
                if aria is None
                else "no timesync_start_idx in takes.json"
                if index is None
                else "captures/<capture>/timesync.csv missing (egoexo --parts captures)"
            )
            self.skip(f"take start on the device clock unknown: {missing}", count, where=str(path))
            return None
        column = f"{aria}_214-1_capture_timestamp_ns"
        header, rows = self._timesync_rows(path)
        if column not in header:
            raise DataError(f"{path}: line 1: no column {column}")
        row = int(index) + 1
        if row >= len(rows):
            raise DataError(
                f"{path}: take {take['take_uid']}: timesync_start_idx + 1 = {row} is past the "
                f"last row ({len(rows) - 1})"
            )
        cell = (
            rows[row][header.index(column)].strip() if header.index(column) < len(rows[row]) else ""
        )
        line = row + 2
        if not cell:
            raise DataError(f"{path}: line {line}: column {column} is empty")
        try:
            return int(float(cell)) if "." in cell or "e" in cell.lower() else int(cell)
        except ValueError:
            raise DataError(f"{path}: line {line}: {column} is not a number: {cell!r}") from None

    def _timesync_rows(self, path: Path) -> tuple[list[str], list[list[str]]]:
        if path not in self._timesync:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                header = [c.strip() for c in next(reader, [])]
                self._timesync[path] = (header, list(reader))
        return self._timesync[path]


def read_primus_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            t_s, imu = np.asarray(npz["t_s"], np.float64), np.asarray(npz["imu"], np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"{path}: not a primus IMU file (needs arrays t_s and imu): {exc}"
        ) from None
    check_columns(imu, 6, str(path))
    if len(t_s) != len(imu):
        raise DataError(f"{path}: {len(t_s)} timestamps but {len(imu)} IMU rows")
    return t_s, imu


def read_processed_pkl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The reference preprocessing's processed_imu.pkl, read with the restricted unpickler
    (numpy arrays only): device-clock ns (N,) and IMU (N, 6)."""
    with open(path, "rb") as fh:
        obj = load_restricted(fh, str(path))
    if not isinstance(obj, dict) or "timestamps" not in obj or "data" not in obj:
        raise DataError(f"{path}: expected a dict with 'timestamps' and 'data'")
    t_ns = np.asarray(obj["timestamps"]).astype(np.int64)
    data = np.asarray(obj["data"], np.float64)
    if data.ndim != 2 or data.shape[0] != 6 or data.shape[1] != len(t_ns):
        raise DataError(
            f"{path}: 'data' has shape {data.shape}, expected (6, {len(t_ns)}) to match "
            f"'timestamps'"
        )
    imu = data.T
    _validate_device_imu(t_ns, imu, str(path))
    return t_ns, imu


def _validate_device_imu(t_ns: np.ndarray, imu: np.ndarray, source: str) -> None:
    if len(t_ns) < 2:
        raise DataError(f"{source}: only {len(t_ns)} IMU sample(s)")
    check_finite(imu, source)
    check_timestamps((t_ns - t_ns[0]).astype(np.float64) * 1e-9, source)


def read_vrs_imu(vrs: Path, stream: str = ARIA_IMU_STREAM) -> tuple[np.ndarray, np.ndarray, int]:
    """Aria IMU stream ``stream`` of a VRS file through Meta's projectaria_tools (optional):
    device-clock ns (N,), IMU (N, 6) acc m/s^2 then gyro rad/s, and the number of records
    dropped because a valid flag was false."""
    try:
        from projectaria_tools.core import data_provider
        from projectaria_tools.core.stream_id import StreamId
    except ImportError:
        raise DataError(
            f"{vrs}: reading VRS needs Meta's projectaria_tools (`pip install "
            f"projectaria-tools`), or put the IMU in a per-take file (imu_dir, docs/datasets.md)"
        ) from None
    try:
        provider = data_provider.create_vrs_data_provider(str(vrs))
        if provider is None:
            raise RuntimeError("projectaria_tools could not open it")
        sid = StreamId(stream)
        n = int(provider.get_num_data(sid))
        t_ns, imu, invalid = [], [], 0
        for i in range(n):  # once per take, at extraction time only
            record = provider.get_imu_data_by_index(sid, i)
            if not (record.accel_valid and record.gyro_valid):
                invalid += 1
                continue
            t_ns.append(int(record.capture_timestamp_ns))
            imu.append([*record.accel_msec2, *record.gyro_radsec])
    except Exception as exc:  # the reader raises its own (pybind) error types
        raise DataError(f"{vrs}: unreadable VRS ({exc})") from None
    if not imu:
        raise DataError(f"{vrs}: no valid records in IMU stream {stream} ({invalid} invalid)")
    return np.asarray(t_ns, np.int64), np.asarray(imu, np.float64).reshape(-1, 6), invalid


def extracted_vrs_imu(vrs: Path, uid: str) -> tuple[np.ndarray, np.ndarray]:
    """The VRS's IMU, extracted once into $PRIMUS_HOME/extracted/egoexo4d (keyed by the VRS
    path, size and mtime), written only after it was validated."""
    stat = vrs.stat()
    key = hashlib.sha256(f"{vrs.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    path = primus_home() / "extracted" / "egoexo4d" / f"{uid}-{key.hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz["t_ns"], np.int64), np.asarray(npz["imu"], np.float64)
    t_ns, imu, _ = read_vrs_imu(vrs)
    _validate_device_imu(t_ns, imu, str(vrs))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, t_ns=t_ns, imu=imu.astype(np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return t_ns, imu.astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------------------------- Ego4D
EGO4D_COLUMNS = {
    "t": "canonical_timestamp_ms",
    "acc_x": "accl_x",
    "acc_y": "accl_y",
    "acc_z": "accl_z",
    "gyro_x": "gyro_x",
    "gyro_y": "gyro_y",
    "gyro_z": "gyro_z",
}
_EMPTY_CELL = re.compile(r"(?:(?<=,)|^)(?=,|$)", re.MULTILINE)
_NON_FINITE = re.compile(r"(?:^|,)\s*([-+]?(?:nan|inf)\w*)\s*(?=,|$)", re.MULTILINE | re.I)


def read_ego4d_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """An Ego4D IMU CSV: (header names, float64 table) with empty cells as NaN. Errors name the
    line: truncated or long rows, unparsable numbers, missing columns."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header, _, body = text.partition("\n")
    names = [c.strip() for c in header.split(",")]
    missing = [c for c in EGO4D_COLUMNS.values() if c not in names]
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
    lines = body.splitlines()
    for number, line in enumerate(lines, start=2):
        if line.strip() and line.count(",") != len(names) - 1:
            raise DataError(
                f"{path}: line {number}: expected {len(names)} columns, got "
                f"{line.count(',') + 1} (truncated or extra fields)"
            )
    literal = _NON_FINITE.search(body)
    if literal is not None:
        number = body.count("\n", 0, literal.start()) + 2
        raise DataError(f"{path}: line {number}: non-finite value {literal.group(1)!r}")
    filled = _EMPTY_CELL.sub("nan", "\n".join(ln for ln in lines if ln.strip()))
    try:
        table = np.loadtxt(filled.splitlines(), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError:
        for number, line in enumerate(lines, start=2):
            for name, cell in zip(names, line.split(","), strict=False):
                try:
                    float(cell or "nan")
                except ValueError:
                    raise DataError(
                        f"{path}: line {number}: {name} is not a number: {cell.strip()!r}"
                    ) from None
        raise
    return names, table.reshape(-1, len(names))


class Ego4D(NarratedAdapter):
    info = INFOS["ego4d"]
    version = "2"
    fingerprint_patterns = (
        "ego4d.json",
        "*/ego4d.json",
        "annotations/narration.json",
        "*/annotations/narration.json",
        "imu/*.csv",
        "*/imu/*.csv",
        "full_scale/*.mp4",
        "*/full_scale/*.mp4",
    )

    def __init__(self, config: Ego4DConfig):
        super().__init__(config)
        self.classes: list[str] = list(config.scenarios or [])

    def layout(self) -> tuple[Path, Path]:
        """(ego4d.json, version folder holding annotations/ and imu/), for a root that is the
        CLI's output folder or points inside its v1/ or v2/."""
        root = self.config.root
        if root is None or not root.is_dir():
            raise missing_root_error(self.info, root, "ego4d.json and v2/annotations/")
        folders = [root / "v2", root / "v1", root]
        folder = next((f for f in folders if (f / "annotations").is_dir()), None)
        if folder is None:
            raise DataError(
                f"dataset 'ego4d': no annotations/ folder in {root}, {root}/v2 or {root}/v1 "
                f"(download with `ego4d --datasets annotations imu`)"
            )
        metas = [root / "ego4d.json", folder / "ego4d.json", root.parent / "ego4d.json"]
        meta = next((m for m in metas if m.is_file()), None)
        if meta is None:
            raise DataError(
                f"dataset 'ego4d': ego4d.json not found in {', '.join(map(str, metas[:2]))} "
                f"(the ego4d CLI writes it with --metadata)"
            )
        return meta, folder

    def sources(self) -> list[dict]:
        meta_path, folder = self.layout()
        videos = {
            v["video_uid"]: v for v in _load_json(meta_path, self.info.name).get("videos", [])
        }
        scenarios = {uid: _scenarios(v) for uid, v in videos.items()}
        if not self.config.scenarios:
            self.classes = sorted({s for v in scenarios.values() for s in v})
        path = folder / "annotations" / "narration.json"
        narrations = _load_json(path, self.info.name)
        participants: dict[str, int] = {}
        out = []
        for uid, passes in sorted(narrations.items()):
            items = [
                n
                for p in self.config.narration_passes
                for n in ((passes or {}).get(p) or {}).get("narrations", [])
            ]
            if not items:
                continue
            video = videos.get(uid)
            where = f"video {uid}"
            if video is None:
                self.skip("video not in ego4d.json", len(items), where=where)
                continue
            names = scenarios[uid]
            if len(names) > 1 and self.config.multi_scenario == "skip":
                self.skip(
                    "video has several scenarios (multi_scenario: skip)", len(items), where=where
                )
                continue
            imu = folder / "imu" / f"{uid}.csv"
            if not imu.is_file():
                if not video.get("has_imu"):
                    self.skip("video has no IMU (has_imu false)", len(items), where=where)
                    continue
                if self.config.missing_imu == "error":
                    raise DataError(f"dataset 'ego4d': {imu} is missing (video {uid} has_imu)")
                self.skip("has_imu but imu/<video_uid>.csv is missing", len(items), where=str(imu))
                continue
            label = self.classes.index(names[0]) if names and names[0] in self.classes else -1
            who = str(video.get("fb_participant_id") or uid)
            out.append(
                {
                    "uid": uid,
                    "imu": imu,
                    "video": video,
                    "narrations": items,
                    "label": label,
                    "subject": participants.setdefault(who, len(participants)),
                    "folder": folder,
                }
            )
        return out

    def read(self, source: dict, contract: IMUContract) -> WindowSet:
        path, uid, items = source["imu"], source["uid"], source["narrations"]
        empty = _empty(contract, list(self.classes), self.info.name)
        names, table = read_ego4d_csv(path)
        t_ms = table[:, names.index(EGO4D_COLUMNS["t"])]
        values = table[:, [names.index(EGO4D_COLUMNS[k]) for k in SIX]]
        t_ms, values = self._repair(t_ms, values, str(path))
        meta = source["video"].get("video_metadata") or {}
        duration = float(
            meta.get("video_duration_sec") or source["video"].get("duration_sec") or 0
        ) or float(t_ms[-1] / 1000.0)
        timed = timed_imu(t_ms / 1000.0, values, duration, contract, str(path))
        if timed is None:
            self.skip("IMU does not overlap the video", len(items), where=str(path))
            return empty
        times, texts = [], []
        for n in items:
            try:
                times.append(float(n["timestamp_sec"]))
                texts.append(str(n.get("narration_text") or ""))
            except (KeyError, TypeError, ValueError):
                self.skip("narration without a numeric timestamp_sec", where=f"video {uid}")
        keep, starts = self.place(uid, times, duration, contract, f"video {uid}")
        windows, keep, starts = self.cut(timed, keep, starts, contract, str(path))
        if not keep:
            return empty
        clean = CLEANERS[self.config.cleaning]
        folder = source["folder"]
        videos = [f / "full_scale" / f"{uid}.mp4" for f in (folder, folder.parent / "v1")]
        video = next((v for v in videos if v.is_file()), None)
        return WindowSet(
            imu=windows,
            labels=np.full(len(keep), source["label"], np.int64),
            class_names=list(self.classes),
            subjects=np.full(len(keep), source["subject"], np.int64),
            narrations=[clean(texts[k]) for k in keep],
            videos=self.videos(video, starts, contract),
            dataset=self.info.name,
        )

    def _repair(
        self, t_ms: np.ndarray, values: np.ndarray, where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """As the layout documents: rows without canonical time dropped (outside the video),
        rows sorted by it, exact duplicates of a time dropped, empty values set to 0."""
        known = ~np.isnan(t_ms)
        self.note(
            "IMU rows with an empty canonical_timestamp_ms dropped",
            int((~known).sum()),
            where=where,
        )
        t_ms, values = t_ms[known], values[known]
        order = np.argsort(t_ms, kind="stable")
        moved = int((order != np.arange(len(order))).sum())
        self.note("IMU rows out of time order, sorted", moved, where=where)
        t_ms, values = t_ms[order], values[order]
        unique = np.concatenate([[True], np.diff(t_ms) > 0]) if len(t_ms) else known[:0]
        self.note("IMU rows repeating a canonical time dropped", int((~unique).sum()), where=where)
        t_ms, values = t_ms[unique], values[unique]
        empty = np.isnan(values)
        self.note(
            "IMU rows with empty value cells, set to 0", int(empty.any(axis=1).sum()), where=where
        )
        return t_ms, np.where(empty, 0.0, values)


def _scenarios(video: dict) -> list[str]:
    value = video.get("scenarios") or []
    return [value] if isinstance(value, str) else [str(s) for s in value]
