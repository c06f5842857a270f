"""RealWorld HAR (University of Mannheim, 2016), read from the official archive layout::

    ROOT/proband<N>/data/acc_<activity>_csv.zip    acc_<activity>[_<part>]_<position>.csv
    ROOT/proband<N>/data/gyr_<activity>_csv.zip    Gyroscope_<activity>... or gyr_...csv

each CSV with header ``id,attr_time,attr_x,attr_y,attr_z`` (time in ms, acc m/s^2, gyro rad/s,
about 50 Hz). Accelerometer and gyroscope have their own clocks: the gyroscope is interpolated
onto the accelerometer's timestamps over the span both cover.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from primus_core.config import IMUContract
from primus_core.data import (
    DatasetAdapter,
    DatasetInfo,
    Recording,
    WindowSet,
    concat_windows,
    empty_windows,
    missing_root_error,
    read_csv,
)
from primus_core.errors import DataError

from .common import RootConfig
from .egocentric import SIX, SIX_UNITS, uniform_grid

REALWORLD_ACTIVITIES = [
    "climbingdown",
    "climbingup",
    "jumping",
    "lying",
    "running",
    "sitting",
    "standing",
    "walking",
]
REALWORLD_PHRASES = [
    "climbing down the stairs",
    "climbing up the stairs",
    "jumping",
    "lying down",
    "running",
    "sitting",
    "standing",
    "walking",
]
POSITIONS = ["chest", "forearm", "head", "shin", "thigh", "upperarm", "waist"]
CSV_COLUMNS = ["id", "attr_time", "attr_x", "attr_y", "attr_z"]


class RealWorldConfig(RootConfig):
    """RealWorld HAR: 15 subjects, 7 body positions, acc + gyro, 50 Hz, 8 activities."""

    position: Literal["chest", "forearm", "head", "shin", "thigh", "upperarm", "waist"] = Field(
        "head", description="body position of the sensor"
    )


class RealWorld(DatasetAdapter):
    info = DatasetInfo(
        name="realworld",
        description="RealWorld HAR (Mannheim): 15 subjects, 8 activities, smartphones/watch on "
        "7 body positions (one chosen by `position`)",
        placement="one of chest, forearm, head, shin, thigh, upperarm, waist",
        native_rate_hz=50.0,
        channels=SIX,
        units=SIX_UNITS,
        licence="free for research use (University of Mannheim, see the dataset page)",
        citation="Sztyler, Stuckenschmidt. On-body Localization of Wearable Devices: An "
        "Investigation of Position-Aware Activity Recognition. PerCom 2016",
        url="https://www.uni-mannheim.de/dws/research/projects/activity-recognition/"
        "dataset/dataset-realworld/",
        labelled=True,
        classes=REALWORLD_ACTIVITIES,
        gated=True,
    )

    def sources(self) -> list[tuple[Path, Path, int, int]]:
        root = self.config.root
        if root is None or not root.is_dir():
            raise missing_root_error(self.info, root, "proband1 ... proband15 folders")
        out = []
        for acc in sorted(root.glob("**/proband*/data/acc_*_csv.zip")):
            proband = re.search(r"proband(\d+)", str(acc.relative_to(root)))
            activity = acc.name[len("acc_") : -len("_csv.zip")]
            if proband is None or activity not in REALWORLD_ACTIVITIES:
                continue
            gyro = acc.with_name(f"gyr_{activity}_csv.zip")
            out.append((acc, gyro, int(proband.group(1)), REALWORLD_ACTIVITIES.index(activity)))
        if not out:
            raise DataError(
                f"dataset 'realworld': no proband*/data/acc_<activity>_csv.zip "
                f"under {root} (expected the official archive layout)"
            )
        return out

    def read(self, source: tuple[Path, Path, int, int], contract: IMUContract) -> WindowSet:
        acc_zip, gyro_zip, proband, label = source
        if not gyro_zip.is_file():
            raise DataError(f"{gyro_zip}: missing (needed with {acc_zip.name})")
        position = self.config.position
        acc_parts = _zip_csvs(acc_zip, position)
        gyro_parts = _zip_csvs(gyro_zip, position)
        if not acc_parts:
            return empty_windows(contract, self.info.classes, self.info.name, with_text=True)
        parts = []
        for key, (acc, acc_name) in sorted(acc_parts.items()):
            if key not in gyro_parts:
                raise DataError(
                    f"{gyro_zip}: no gyroscope part {key or 1} for {position} "
                    f"(the accelerometer has {acc_name})"
                )
            gyro, gyro_name = gyro_parts[key]
            rec = _align(acc, gyro, f"{acc_zip}:{acc_name}", f"{gyro_zip}:{gyro_name}")
            recording = Recording(
                data=rec,
                rate_hz=50.0,
                channels=SIX,
                units=SIX_UNITS,
                subject=proband,
                labels=np.full(len(rec), label, np.int64),
                source=f"{acc_zip}:{acc_name}",
            )
            parts.append(self.windows_of(recording, contract, phrases=REALWORLD_PHRASES))
        return concat_windows(parts, contract)


def _zip_csvs(path: Path, position: str) -> dict[str, tuple[tuple[np.ndarray, int], str]]:
    """{part: ((table, first data line), member name)} for one position inside a zip."""
    pattern = re.compile(rf"^(?:acc|gyr|Gyroscope)_[a-z]+(?:_(\d+))?_{position}\.csv$", re.I)
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                match = pattern.match(Path(member).name)
                if match:
                    text = zf.read(member).decode("utf-8", errors="replace")
                    table = read_csv(path, CSV_COLUMNS, text=text, source=f"{path}:{member}")
                    out[match.group(1) or ""] = (table, member)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a valid zip archive") from None
    return out


def _align(
    acc: tuple[np.ndarray, int], gyro: tuple[np.ndarray, int], acc_src: str, gyro_src: str
) -> np.ndarray:
    """acc and gyro on one uniform 50 Hz grid over the span both cover: (N, 6)."""
    (a, a_line), (g, g_line) = acc, gyro
    a_grid, a_rate, a_t0 = uniform_grid(a[:, 1] / 1000.0, a[:, 2:5], acc_src, a_line)
    g_grid, g_rate, g_t0 = uniform_grid(g[:, 1] / 1000.0, g[:, 2:5], gyro_src, g_line)
    t_a = a_t0 + np.arange(len(a_grid)) / a_rate
    t_g = g_t0 + np.arange(len(g_grid)) / g_rate
    start, stop = max(t_a[0], t_g[0]), min(t_a[-1], t_g[-1])
    if stop <= start:
        raise DataError(f"{gyro_src}: does not overlap in time with {acc_src}")
    t = np.arange(start, stop, 1 / 50.0)
    acc50 = np.stack([np.interp(t, t_a, a_grid[:, c]) for c in range(3)], axis=1)
    gyro50 = np.stack([np.interp(t, t_g, g_grid[:, c]) for c in range(3)], axis=1)
    return np.concatenate([acc50, gyro50], axis=1)
