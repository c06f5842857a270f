"""EgoExo4D and Ego4D: head-worn IMU with narrations, read from local copies in the official
download layouts (both need a licence agreement; nothing here downloads them).

EgoExo4D (https://docs.ego-exo4d-data.org)::

    ROOT/takes.json                                   take_uid, take_name, task / parent task
    ROOT/annotations/atomic_descriptions_{train,val}.json
    ROOT/takes/<take_name>/*.vrs                      Aria recording (IMU stream "1202-1")
    ROOT/takes/<take_name>/frame_aligned_videos/...   ego video (aria*_214-1.mp4)

Raw VRS needs Meta's ``projectaria_tools`` (optional). ``primus data prepare egoexo4d`` reads
the IMU of each take once into primus' own per-take format, which is also what a user can write
from IMU extracted by other means (IMU_DIR defaults to ``ROOT/primus_imu``)::

    IMU_DIR/<take_uid>.npz   arrays t_s (float64 (N,), seconds from the take start) and
                             imu (float32 (N, 6): acc_x, acc_y, acc_z m/s^2, gyro_x..z rad/s)
    IMU_DIR/<take_uid>.csv   the same as text: header t_s,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z

Ego4D (https://ego4d-data.org/docs)::

    ROOT/ego4d.json                               videos: video_uid, scenarios
    ROOT/v2/annotations/narration.json            {video_uid: {narration_pass_1: {narrations:
                                                   [{timestamp_sec, narration_text}]}}}
    ROOT/v2/imu/<video_uid>.csv                   canonical_timestamp_ms, accl_x.., gyro_x..
"""

from __future__ import annotations

import json
import os
import re
import string
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from primus_core.config import IMUContract
from primus_core.data import (
    DatasetAdapter,
    DatasetInfo,
    WindowSet,
    centred_starts,
    check_columns,
    check_finite,
    check_timestamps,
    gather_windows,
    missing_root_error,
    read_csv,
    resample,
    to_contract_channels,
)
from primus_core.errors import DataError

from .common import RootConfig

SIX = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
SIX_UNITS = ["m/s^2"] * 3 + ["rad/s"] * 3
PRIMUS_IMU_COLUMNS = ["t_s", *SIX]
_PUNCT = str.maketrans("", "", string.punctuation)


def clean_narration(text: str, max_chars: int = 128) -> str:
    """PRIMUS narration cleaning: drop the "#C C " prefix, "#unsure" -> "something", strip
    punctuation, lowercase, at most 128 characters."""
    text = text.strip()
    if text.startswith("#C C "):
        text = text[len("#C C ") :]
    text = re.sub(r"#unsure", "something", text, flags=re.IGNORECASE)
    text = " ".join(text.translate(_PUNCT).lower().split())
    return text[:max_chars]


def _load_json(path: Path, dataset: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"dataset '{dataset}': {path} is missing") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None


def uniform_grid(
    t_s: np.ndarray, data: np.ndarray, source: str, first_line: int | None
) -> tuple[np.ndarray, float, float]:
    """Validate timestamps and interpolate onto a uniform grid at the median native rate.
    Returns (data on the grid, rate Hz, time of the first grid sample)."""
    check_timestamps(t_s, source, first_line)
    if len(t_s) < 2:
        raise DataError(f"{source}: only {len(t_s)} IMU sample(s)")
    rate = 1.0 / float(np.median(np.diff(t_s)))
    rate = float(round(rate)) if rate > 10 else rate
    n = int(np.floor((t_s[-1] - t_s[0]) * rate)) + 1
    grid = t_s[0] + np.arange(n) / rate
    out = np.stack([np.interp(grid, t_s, data[:, c]) for c in range(data.shape[1])], axis=1)
    return out, rate, float(t_s[0])


def centred_windows(
    t_s: np.ndarray,
    data: np.ndarray,
    channels: list[str],
    units: list[str],
    centres_s: np.ndarray,
    contract: IMUContract,
    source: str,
    first_line: int | None,
    min_fill: float,
) -> np.ndarray:
    """Windows of the contract centred on ``centres_s`` (seconds), clamped to the recording and
    zero-padded when the recording is shorter than a window. Whole-array operations only."""
    check_columns(data, len(channels), source)
    check_finite(data, source, first_line)
    grid, rate, t0 = uniform_grid(np.asarray(t_s, np.float64), data, source, first_line)
    x = to_contract_channels(grid, channels, units, contract, source=source)
    x = resample(x, rate, contract.rate_hz)
    window = contract.window_samples
    if x.shape[0] < min_fill * window:
        raise DataError(
            f"{source}: recording lasts {x.shape[0] / contract.rate_hz:.2f} s, "
            f"shorter than {min_fill:g} of a {contract.window_seconds:g} s window"
        )
    starts = centred_starts(np.asarray(centres_s) - t0, contract.rate_hz, x.shape[0], window)
    return gather_windows(x, starts, window)


# ------------------------------------------------------------------------------- EgoExo4D
EGOEXO_SCENARIOS = [
    "covid test",
    "bike repair",
    "rock climbing",
    "soccer/basketball",
    "cpr",
    "cooking",
    "dancing",
    "music",
]


def egoexo_scenario(take: dict) -> int:
    """The 8 PRIMUS scenario labels from a take's task / parent task names (-1: none)."""
    task = str(take.get("task_name", "")).lower()
    parent = str(take.get("parent_task_name", "")).lower()
    text = f"{parent} | {task}"
    rules = [
        ("covid", 0),
        ("bike", 1),
        ("climb", 2),
        ("soccer", 3),
        ("basketball", 3),
        ("cpr", 4),
        ("cook", 5),
        ("danc", 6),
        ("music", 7),
    ]
    for word, label in rules:
        if word in text:
            return label
    return -1


class EgoExo4DConfig(RootConfig):
    """EgoExo4D atomic descriptions with Aria head IMU (licence-gated; local copy only)."""

    imu_dir: Path | None = Field(
        None, description="primus per-take IMU files (default ROOT/primus_imu)"
    )
    splits: list[Literal["train", "val"]] = Field(default_factory=lambda: ["train", "val"])
    exclude: list[str] = Field(
        default_factory=list,
        description="known-bad windows as 'take_uid@seconds', or whole takes as 'take_uid'",
    )
    missing_imu: Literal["error", "skip"] = "error"


class EgoExo4D(DatasetAdapter):
    info = DatasetInfo(
        name="egoexo4d",
        description="EgoExo4D ego-view atomic descriptions: one window centred on each "
        "description, Aria glasses IMU (1 kHz stream 1202-1), 8 scenario labels",
        placement="head (Aria glasses)",
        native_rate_hz=1000.0,
        channels=SIX,
        units=SIX_UNITS,
        licence="Ego-Exo4D licence agreement (non-commercial research)",
        citation="Grauman et al. Ego-Exo4D: Understanding Skilled Human Activity from First- "
        "and Third-Person Perspectives. CVPR 2024",
        url="https://ego-exo4d-data.org (sign the licence, then the egoexo downloader: "
        "takes.json, annotations, takes/*/*.vrs)",
        labelled=True,
        classes=EGOEXO_SCENARIOS,
        gated=True,
    )

    def _root(self) -> Path:
        root = self.config.root
        if root is None or not root.is_dir():
            raise missing_root_error(self.info, root, "takes.json and annotations/")
        return root

    def imu_dir(self) -> Path:
        return self.config.imu_dir or self._root() / "primus_imu"

    def sources(self) -> list[dict]:
        root = self._root()
        takes_json = _load_json(root / "takes.json", self.info.name)
        takes = {t["take_uid"]: t for t in takes_json}
        participants: dict[str, int] = {}
        excluded_takes = {e for e in self.config.exclude if "@" not in e}
        out = []
        for split in self.config.splits:
            path = root / "annotations" / f"atomic_descriptions_{split}.json"
            annotations = _load_json(path, self.info.name).get("annotations", {})
            for take_uid, raters in sorted(annotations.items()):
                if take_uid in excluded_takes:
                    continue
                if take_uid not in takes:
                    raise DataError(f"{path}: take {take_uid} is not in takes.json")
                descriptions = [d for r in raters for d in r.get("descriptions", [])]
                if not descriptions:
                    continue
                take = takes[take_uid]
                who = str(take.get("participant_uid", take_uid))
                subject = participants.setdefault(who, len(participants))
                out.append(
                    {
                        "take": take,
                        "descriptions": descriptions,
                        "subject": subject,
                        "annotations": str(path),
                    }
                )
        return out

    def read(self, source: dict, contract: IMUContract) -> WindowSet:
        take = source["take"]
        uid = take["take_uid"]
        loaded = self.take_imu(take)
        if loaded is None:
            return _empty(contract, self.info, videos=True)
        t_s, imu, where, first_line = loaded
        drop = {e.split("@", 1)[1] for e in self.config.exclude if e.startswith(f"{uid}@")}
        keep = [
            d
            for d in source["descriptions"]
            if f"{float(d['timestamp']):g}" not in {f"{float(x):g}" for x in drop}
        ]
        if not keep:
            return _empty(contract, self.info, videos=True)
        centres = np.array([float(d["timestamp"]) for d in keep])
        windows = centred_windows(
            t_s, imu, SIX, SIX_UNITS, centres, contract, where, first_line, self.config.min_fill
        )
        label = egoexo_scenario(take)
        video = _ego_video(self._root(), take.get("take_name", ""))
        half = contract.window_seconds / 2
        return WindowSet(
            imu=windows,
            labels=np.full(len(keep), label, np.int64),
            class_names=list(self.info.classes),
            subjects=np.full(len(keep), source["subject"], np.int64),
            narrations=[clean_narration(str(d.get("text", ""))) for d in keep],
            videos=[
                {"path": video, "take_uid": uid, "start_s": c - half, "end_s": c + half}
                for c in centres.tolist()
            ],
            dataset=self.info.name,
        )

    def take_imu(self, take: dict) -> tuple[np.ndarray, np.ndarray, str, int | None] | None:
        """(t_s, imu (N, 6), source name, first data line or None) of a take, extracting it
        from the VRS once when only the raw recording exists."""
        uid = take["take_uid"]
        folder = self.imu_dir()
        npz, csv = folder / f"{uid}.npz", folder / f"{uid}.csv"
        if npz.is_file():
            return (*read_primus_npz(npz), str(npz), None)
        if csv.is_file():
            table, first = read_csv(csv, PRIMUS_IMU_COLUMNS)
            return table[:, 0], table[:, 1:], str(csv), first
        vrs = sorted((self._root() / "takes" / take.get("take_name", "")).glob("*.vrs"))
        if vrs:
            t_s, imu = extract_vrs_imu(vrs[0])
            write_primus_npz(npz, t_s, imu)
            return t_s, imu, str(npz), None
        if self.config.missing_imu == "skip":
            return None
        raise DataError(
            f"dataset 'egoexo4d': take {uid} ({take.get('take_name', '?')}) has no "
            f"IMU: neither {npz} / {csv} nor a .vrs under "
            f"{self._root() / 'takes' / take.get('take_name', '')}"
        )


def _ego_video(root: Path, take_name: str) -> str | None:
    folder = root / "takes" / take_name / "frame_aligned_videos"
    found = sorted(
        folder.glob("**/aria*214-1.mp4"), key=lambda p: ("downscaled" not in str(p), str(p))
    )
    return str(found[0]) if found else None


def _empty(contract: IMUContract, info: DatasetInfo, videos: bool) -> WindowSet:
    from primus_core.data import empty_windows

    return empty_windows(contract, info.classes, info.name, with_text=True, with_videos=videos)


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


def write_primus_npz(path: Path, t_s: np.ndarray, imu: np.ndarray) -> None:
    """Write a per-take IMU file atomically (temporary name, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, t_s=np.asarray(t_s, np.float64), imu=np.asarray(imu, np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def extract_vrs_imu(vrs: Path, stream: str = "1202-1") -> tuple[np.ndarray, np.ndarray]:
    """Aria IMU from a VRS file with Meta's projectaria_tools (optional dependency); time is
    seconds from the first IMU sample."""
    try:
        from projectaria_tools.core import data_provider
        from projectaria_tools.core.stream_id import StreamId
    except ImportError:
        raise DataError(
            f"{vrs}: reading VRS needs Meta's projectaria_tools "
            f"(`pip install projectaria-tools`), or extract the IMU into primus' "
            f"per-take format (docs/datasets.md)"
        ) from None
    provider = data_provider.create_vrs_data_provider(str(vrs))
    sid = StreamId(stream)
    n = provider.get_num_data(sid)
    t = np.empty(n, np.float64)
    imu = np.empty((n, 6), np.float64)
    for i in range(n):  # one pass over the stream at extraction time only
        sample = provider.get_imu_data_by_index(sid, i)
        t[i] = sample.capture_timestamp_ns * 1e-9
        imu[i, :3] = sample.accel_msec2
        imu[i, 3:] = sample.gyro_radsec
    return t - t[0], imu


# ---------------------------------------------------------------------------------- Ego4D
EGO4D_IMU = {
    "t": "canonical_timestamp_ms",
    "acc_x": "accl_x",
    "acc_y": "accl_y",
    "acc_z": "accl_z",
    "gyro_x": "gyro_x",
    "gyro_y": "gyro_y",
    "gyro_z": "gyro_z",
}


class Ego4DConfig(RootConfig):
    """Ego4D narrations with the head IMU (licence-gated; local copy only)."""

    narration_pass: str = "narration_pass_1"
    scenarios: list[str] | None = Field(
        None, description="scenario classes (default: every scenario in ego4d.json)"
    )
    missing_imu: Literal["error", "skip"] = "skip"


class Ego4D(DatasetAdapter):
    info = DatasetInfo(
        name="ego4d",
        description="Ego4D narrations: one window centred on each narration, head IMU, "
        "scenario labels from ego4d.json",
        placement="head (Vuzix Blade / GoPro)",
        native_rate_hz=200.0,
        channels=SIX,
        units=SIX_UNITS,
        licence="Ego4D licence agreement (non-commercial research)",
        citation="Grauman et al. Ego4D: Around the World in 3,000 Hours of Egocentric Video. "
        "CVPR 2022",
        url="https://ego4d-data.org (sign the licence, then `ego4d --datasets imu "
        "annotations --output_directory ROOT`)",
        labelled=True,
        classes=[],
        gated=True,
    )

    def __init__(self, config: Ego4DConfig):
        super().__init__(config)
        self.classes: list[str] = list(config.scenarios or [])

    def _root(self) -> Path:
        root = self.config.root
        if root is None or not root.is_dir():
            raise missing_root_error(
                self.info, root, "ego4d.json and v2/annotations/narration.json"
            )
        return root

    def sources(self) -> list[dict]:
        root = self._root()
        meta = _load_json(root / "ego4d.json", self.info.name)
        scen = {v["video_uid"]: list(v.get("scenarios") or []) for v in meta.get("videos", [])}
        if not self.config.scenarios:
            self.classes = sorted({s for v in scen.values() for s in v})
        narrations = _load_json(root / "v2" / "annotations" / "narration.json", self.info.name)
        out = []
        for i, (uid, passes) in enumerate(sorted(narrations.items())):
            items = (passes.get(self.config.narration_pass) or {}).get("narrations", [])
            if not items:
                continue
            label = next(
                (self.classes.index(s) for s in scen.get(uid, []) if s in self.classes), -1
            )
            imu = root / "v2" / "imu" / f"{uid}.csv"
            if not imu.is_file():
                if self.config.missing_imu == "skip":
                    continue
                raise DataError(f"dataset 'ego4d': {imu} is missing (video {uid} has narrations)")
            out.append({"uid": uid, "imu": imu, "narrations": items, "label": label, "subject": i})
        return out

    def read(self, source: dict, contract: IMUContract) -> WindowSet:
        path = source["imu"]
        header = path.read_text(encoding="utf-8").split("\n", 1)[0]
        names = [c.strip() for c in header.split(",")]
        missing = [c for c in EGO4D_IMU.values() if c not in names]
        if missing:
            raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
        table, first = read_csv(path, names)
        cols = [names.index(EGO4D_IMU[k]) for k in SIX]
        t_s = table[:, names.index(EGO4D_IMU["t"])] / 1000.0
        items = source["narrations"]
        centres = np.array([float(n["timestamp_sec"]) for n in items])
        windows = centred_windows(
            t_s,
            table[:, cols],
            SIX,
            SIX_UNITS,
            centres,
            contract,
            str(path),
            first,
            self.config.min_fill,
        )
        video = self._root() / "v2" / "full_scale" / f"{source['uid']}.mp4"
        half = contract.window_seconds / 2
        return WindowSet(
            imu=windows,
            labels=np.full(len(items), source["label"], np.int64),
            class_names=list(self.classes),
            subjects=np.full(len(items), source["subject"], np.int64),
            narrations=[clean_narration(str(n.get("narration_text", ""))) for n in items],
            videos=[
                {
                    "path": str(video) if video.is_file() else None,
                    "video_uid": source["uid"],
                    "start_s": c - half,
                    "end_s": c + half,
                }
                for c in centres.tolist()
            ],
            dataset=self.info.name,
        )
