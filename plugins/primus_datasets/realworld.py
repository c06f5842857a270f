"""RealWorld HAR (University of Mannheim, 2016), read from the official archive layout::

    ROOT/proband<N>/data/acc_<activity>_csv.zip    acc_<activity>[_<part>]_<position>.csv
    ROOT/proband<N>/data/gyr_<activity>_csv.zip    Gyroscope_<activity>... or gyr_...csv

each CSV with header ``id,attr_time,attr_x,attr_y,attr_z`` (time in Unix ms, acc m/s^2, gyro
rad/s, about 50 Hz). Some sessions are zips inside the zip (``acc_<activity>_<n>_csv.zip``),
some members carry a ``_2`` infix. Accelerometer and gyroscope have their own clocks: both are
interpolated onto one 50 Hz grid over the span both cover. Archive members are read in bounded
chunks, at most ``max_member_mb`` each.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from primus_core.config import IMUContract
from primus_core.data.windows import (
    DatasetAdapter,
    Recording,
    WindowSet,
    check_finite,
    check_timestamps,
    concat_windows,
    empty_windows,
    min_native_samples,
    missing_root_error,
    read_csv,
)
from primus_core.errors import DataError

from .info import INFOS, REALWORLD_ACTIVITIES, SIX, SIX_UNITS

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


class RealWorld(DatasetAdapter):
    info = INFOS["realworld"]
    version = "2"
    fingerprint_patterns = ("**/proband*/data/acc_*_csv.zip", "**/proband*/data/gyr_*_csv.zip")

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
            if not gyro.is_file():
                self.skip("gyroscope archive missing", unit="recording", where=str(gyro))
                continue
            out.append((acc, gyro, int(proband.group(1)), REALWORLD_ACTIVITIES.index(activity)))
        if not out:
            raise DataError(
                f"dataset 'realworld': no proband*/data/acc_<activity>_csv.zip with its "
                f"gyr_<activity>_csv.zip under {root} (expected the official archive layout)"
            )
        return out

    def read(self, source: tuple[Path, Path, int, int], contract: IMUContract) -> WindowSet:
        acc_zip, gyro_zip, proband, label = source
        position, activity = self.config.position, REALWORLD_ACTIVITIES[label]
        limit = int(self.config.max_member_mb * 1e6)
        acc = _sessions(acc_zip, activity, position, limit)
        gyro = _sessions(gyro_zip, activity, position, limit)
        where = f"{acc_zip.parent} {activity} {position}"
        if len(acc) == 1 and len(gyro) == 1:  # one session each: pair whatever they are named
            pairs = [(next(iter(acc.values())), next(iter(gyro.values())))]
        else:
            pairs = [(acc[k], gyro[k]) for k in sorted(acc) if k in gyro]
            for k in sorted(set(acc) - set(gyro)):
                self.skip("no gyroscope member", unit="recording", where=f"{acc[k][0]}")
            for k in sorted(set(gyro) - set(acc)):
                self.skip("no accelerometer member", unit="recording", where=f"{gyro[k][0]}")
            if not acc and not gyro:
                self.skip("no member for this position", unit="recording", where=where)
        parts = []
        for (acc_name, acc_text), (gyro_name, gyro_text) in pairs:
            rec = _align(acc_name, acc_text, gyro_name, gyro_text)
            if rec is None:
                self.skip(
                    "accelerometer and gyroscope do not overlap in time",
                    unit="recording",
                    where=acc_name,
                )
                continue
            if len(rec) < min_native_samples(50.0, contract, self.config.min_fill):
                self.skip(
                    f"recording shorter than min_fill ({self.config.min_fill:g}) of a window",
                    unit="recording",
                    where=f"{acc_name} ({len(rec) / 50.0:.2f} s)",
                )
                continue
            recording = Recording(
                data=rec,
                rate_hz=50.0,
                channels=SIX,
                units=SIX_UNITS,
                subject=proband,
                labels=np.full(len(rec), label, np.int64),
                source=acc_name,
            )
            parts.append(self.windows_of(recording, contract, phrases=REALWORLD_PHRASES))
        if not parts:
            return empty_windows(contract, self.info.classes, self.info.name, with_text=True)
        return concat_windows(parts, contract)


def _member_pattern(activity: str, position: str) -> re.Pattern:
    return re.compile(
        rf"^(?:acc|accelerometer|gyr|gyroscope)_{activity}(?:_(\d+))?_{position}\.csv$", re.I
    )


def _sessions(path: Path, activity: str, position: str, limit: int) -> dict[int, tuple[str, str]]:
    """{session: (name, CSV text)} of one position in an archive, looking into the zips it
    holds (zip-of-zips sessions); the session number comes from a ``_<n>`` in the member or
    inner zip name, 1 when there is none."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _scan(zf, str(path), _member_pattern(activity, position), limit, 1)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not a valid zip archive ({exc})") from None


def _scan(
    zf: zipfile.ZipFile, label: str, pattern: re.Pattern, limit: int, session: int
) -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    for info in zf.infolist():
        name = Path(info.filename).name
        if name.lower().endswith("_csv.zip"):
            inner = re.search(r"_(\d+)_csv\.zip$", name, re.I)
            data = read_member(zf, info, label, limit)
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as nested:
                    found = _scan(
                        nested,
                        f"{label}:{info.filename}",
                        pattern,
                        limit,
                        int(inner.group(1)) if inner else 1,
                    )
            except zipfile.BadZipFile as exc:
                raise DataError(f"{label}:{info.filename}: not a valid zip ({exc})") from None
            out.update(found)
            continue
        match = pattern.match(name)
        if match:
            key = int(match.group(1)) if match.group(1) else session
            text = read_member(zf, info, label, limit).decode("utf-8", errors="replace")
            out[key] = (f"{label}:{info.filename}", text)
    return out


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limit: int) -> bytes:
    """An archive member's bytes, read in 1 MiB chunks and refused past ``limit`` bytes (by
    its header first, then by what it really inflates to)."""
    where = f"{label}:{info.filename}"

    def refuse(size: int) -> DataError:
        return DataError(
            f"{where}: member is {size / 1e6:.3g} MB or more uncompressed, over the "
            f"{limit / 1e6:g} MB limit (raise max_member_mb to read it)"
        )

    if info.file_size > limit:
        raise refuse(info.file_size)
    chunks, total = [], 0
    try:
        with zf.open(info) as fh:
            while block := fh.read(1 << 20):
                total += len(block)
                if total > limit:
                    raise refuse(total)
                chunks.append(block)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:  # CRC errors, truncated data
        raise DataError(f"{where}: cannot read ({exc})") from None
    return b"".join(chunks)


def _align(acc_name: str, acc_text: str, gyro_name: str, gyro_text: str) -> np.ndarray | None:
    """acc and gyro on one uniform 50 Hz grid from the latest start over the span both cover:
    (N, 6); None when they do not overlap."""
    a, a_line = read_csv(acc_name, CSV_COLUMNS, text=acc_text, source=acc_name)
    g, g_line = read_csv(gyro_name, CSV_COLUMNS, text=gyro_text, source=gyro_name)
    for table, name, line in ((a, acc_name, a_line), (g, gyro_name, g_line)):
        if len(table) < 2:
            raise DataError(f"{name}: only {len(table)} sample(s)")
        check_finite(table, name, line)
        check_timestamps(table[:, 1] / 1000.0, name, line, scale=1.0)
    t_a, t_g = a[:, 1] / 1000.0, g[:, 1] / 1000.0
    start, stop = max(t_a[0], t_g[0]), min(t_a[-1], t_g[-1])
    if stop <= start:
        return None
    t = start + np.arange(int(np.floor((stop - start) * 50.0 + 1e-6)) + 1) / 50.0
    acc50 = np.stack([np.interp(t, t_a, a[:, 2 + c]) for c in range(3)], axis=1)
    gyro50 = np.stack([np.interp(t, t_g, g[:, 2 + c]) for c in range(3)], axis=1)
    return np.concatenate([acc50, gyro50], axis=1)
