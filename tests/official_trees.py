"""Tiny deterministic dataset trees in the official download layouts (EgoExo4D, Ego4D,
RealWorld; see docs/datasets.md), with the real archives' quirks, for the adapter tests.

Every tree carries a time marker: gyro_z = MARK * t, t in seconds on the timeline a window is
placed on (the take, the canonical video, the recording), so a test reads back where each
window starts from its first gyro_z sample. ``python tests/official_trees.py OUT`` writes all
three trees under OUT.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

MARK = 0.01  # gyro_z = MARK * seconds
G = 9.81


def _imu(t_timeline: np.ndarray) -> np.ndarray:
    """(N, 6) acc xyz, gyro xyz with gravity on acc_z and the marker on gyro_z."""
    out = np.zeros((len(t_timeline), 6))
    out[:, 0] = np.sin(t_timeline)
    out[:, 2] = G
    out[:, 5] = MARK * t_timeline
    return out


# ------------------------------------------------------------------------------- EgoExo4D
DEVICE_T0_NS = 7_000_000_000_000  # Aria device clock at the first timesync row
FRAME_NS = 33_333_333
EGOEXO_TAKES = {
    # uid: (take_name, aria camera, duration_sec, IMU lead before the take s, tail s, source)
    "t-bike": ("cmu_bike01_2", "aria06", 30.0, 0.20, 0.30, "pkl"),
    "t-cook": ("upenn_cooking_3", "aria01", 12.0, 0.15, 0.0, "vrs"),
    "t-covid": ("unc_covid_1", "aria02", 3.0, 0.0, 0.0, "user"),
    "t-dance": ("uniandes_dance_4", "aria01", 20.0, 0.25, 0.1, "pkl"),
    "t-novideo": ("iiith_cooking_5", "aria01", 10.0, 0.1, 0.0, "none"),
}
# descriptions per take: [(annotator rejected?, [timestamps])]
EGOEXO_DESCRIPTIONS = {
    "t-bike": [(False, [1.0, 10.0, 29.0, 15.3]), (True, [12.0]), (False, [20.5])],
    "t-cook": [(False, [6.0, 0.4])],
    "t-covid": [(False, [1.5])],
    "t-dance": [(False, [4.9, 19.99])],
    "t-novideo": [(False, [5.0])],
}
EGOEXO_SPLIT = {"t-bike": "train", "t-cook": "train", "t-covid": "train", "t-dance": "val"}
TIMESYNC_START_IDX = {"t-bike": 3, "t-cook": 5, "t-covid": 0, "t-dance": 2, "t-novideo": 1}


def egoexo_take_start_ns(uid: str) -> int:
    return DEVICE_T0_NS + (TIMESYNC_START_IDX[uid] + 1) * FRAME_NS


def egoexo_device_imu(uid: str, rate: float, invalid_every: int = 0):
    """(device ns, IMU (N, 6) with gyro_z = MARK * take time, valid flags) of a take."""
    _, _, duration, lead, tail, _ = EGOEXO_TAKES[uid]
    n = int(round((duration + lead + tail) * rate)) + 1
    t_take = -lead + np.arange(n) / rate
    t_ns = egoexo_take_start_ns(uid) + np.round(t_take * 1e9).astype(np.int64)
    valid = np.ones(n, bool)
    if invalid_every:
        valid[::invalid_every] = False
    return t_ns, _imu(t_take), valid


def make_egoexo4d(root: Path) -> Path:
    """The egoexo CLI's tree: takes.json, annotations/ (two annotation files, splits.json),
    captures/<capture>/timesync.csv, takes/<take>/ with processed_imu.pkl, a (fake-readable)
    *_noimagestreams.vrs, or a user per-take file under primus_imu/, and ego videos."""
    root.mkdir(parents=True)
    takes = []
    for uid, (name, aria, duration, _, _, source) in EGOEXO_TAKES.items():
        capture = name.rsplit("_", 1)[0]
        cameras = [
            {"cam_id": "cam01", "is_ego": False, "device_type": "gopro"},
            {"cam_id": "aria09", "is_ego": False, "device_type": "aria"},  # another wearer
            {"cam_id": aria, "is_ego": True, "device_type": "aria"},
        ]
        takes.append(
            {
                "take_uid": uid,
                "take_name": name,
                "root_dir": f"takes/{name}",
                "duration_sec": duration,
                "participant_uid": 100 + len(takes) % 3,
                "parent_task_name": {"t-bike": "Bike Repair", "t-cook": "Cooking"}.get(uid, ""),
                "task_name": "",
                "timesync_start_idx": TIMESYNC_START_IDX[uid],
                "timesync_end_idx": TIMESYNC_START_IDX[uid] + int(duration * 30),
                "capture": {
                    "capture_name": capture,
                    "root_dir": f"captures/{capture}",
                    "cameras": cameras,
                },
            }
        )
        folder = root / "takes" / name
        videos = folder / "frame_aligned_videos"
        (videos / "downscaled" / "448").mkdir(parents=True)
        for cam in ("cam01", "aria09"):
            (videos / f"{cam}_214-1.mp4" if cam != "cam01" else videos / "cam01.mp4").write_bytes(
                b"\x00"
            )
        if uid != "t-novideo":
            (videos / f"{aria}_214-1.mp4").write_bytes(b"\x00")
            if uid != "t-dance":  # no downscaled copy: the full one is used
                (videos / "downscaled" / "448" / f"{aria}_214-1.mp4").write_bytes(b"\x00")
        _timesync(root / "captures" / capture / "timesync.csv", aria, TIMESYNC_START_IDX[uid])
        if source == "pkl":
            t_ns, imu, _ = egoexo_device_imu(uid, 1000.0)
            payload = {
                "timestamps": t_ns,
                "data": imu.T.copy(),
                "invalid_record_count": 0,
                "original_relative_path": f"takes/{name}/{aria}_noimagestreams.vrs",
            }
            (folder / "processed_imu.pkl").write_bytes(pickle.dumps(payload, protocol=4))
        elif source == "vrs":
            t_ns, imu, valid = egoexo_device_imu(uid, 800.0, invalid_every=97)
            imu[~valid] = 1e6  # invalid records hold garbage: they must be dropped
            buf = io.BytesIO()
            np.savez(buf, t_ns=t_ns, imu=imu, valid=valid)
            (folder / f"{aria}_noimagestreams.vrs").write_bytes(buf.getvalue())
            (folder / "aria09_noimagestreams.vrs").write_bytes(b"not the ego camera")
        elif source == "user":
            n = int(duration * 1000) + 1
            t = np.arange(n) / 1000.0
            rows = np.column_stack([t, _imu(t)])
            user = root / "primus_imu" / f"{uid}.csv"
            user.parent.mkdir(exist_ok=True)
            header = "t_s,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n"
            user.write_text(header + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows))
    (root / "takes.json").write_text(json.dumps(takes))
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        annotations = {
            uid: _annotators(uid)
            for uid in EGOEXO_DESCRIPTIONS
            if EGOEXO_SPLIT.get(uid, "train") == split
        }
        if split == "train":
            annotations["t-unknown"] = [{"rejected": False, "descriptions": [_desc(1.0, "C x")]}]
        doc = {"ds": "20240324_01:26:30", "take_cam_id_map": {}, "annotations": annotations}
        (root / "annotations" / f"atomic_descriptions_{split}.json").write_text(json.dumps(doc))
    splits = {"take_uid_to_split": dict(EGOEXO_SPLIT, **{"t-novideo": "train"})}
    splits["take_uid_to_benchmark"] = {}
    (root / "annotations" / "splits.json").write_text(json.dumps(splits))
    return root


def _desc(t: float, text: str) -> dict:
    return {
        "text": text,
        "timestamp": t,
        "subject": "C",
        "ego_visible": True,
        "best_exo": None,
        "unsure": False,
    }


def _annotators(uid: str) -> list[dict]:
    out = []
    for k, (rejected, times) in enumerate(EGOEXO_DESCRIPTIONS[uid]):
        texts = [f"#C C Checks the Bike at {t:g}, #unsure!" for t in times]
        out.append(
            {
                "annotation_uid": f"{uid}-a{k}",
                "annotator_id": f"rater{k}",
                "rejected": rejected,
                "reject_reason": "other" if rejected else None,
                "descriptions": [_desc(t, x) for t, x in zip(times, texts, strict=True)],
            }
        )
    return out


def _timesync(path: Path, aria: str, start_idx: int) -> None:
    """A timesync.csv: per-camera pts / frame numbers, Aria RGB capture ns; the row before
    the take's start row has an empty Aria cell (as where the Aria had no frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [
        "cam01_pts",
        "cam01_frame_number",
        f"{aria}_214-1_capture_timestamp_ns",
        f"{aria}_214-1_frame_number",
    ]
    lines = [",".join(columns)]
    for i in range(start_idx + 40):
        ns = "" if i == start_idx else str(DEVICE_T0_NS + i * FRAME_NS)
        lines.append(f"{i * 1001},{i},{ns},{i}")
    path.write_text("\n".join(lines) + "\n")


def fake_projectaria_tools() -> dict[str, types.ModuleType]:
    """Modules standing in for projectaria_tools (its API: data_provider.
    create_vrs_data_provider, StreamId, get_num_data, get_imu_data_by_index -> MotionData):
    the "VRS" here is an npz of t_ns, imu and valid flags; anything else is unreadable."""

    class MotionData:
        def __init__(self, t_ns, imu, valid):
            self.capture_timestamp_ns = int(t_ns)
            self.accel_msec2, self.gyro_radsec = list(imu[:3]), list(imu[3:])
            self.accel_valid = self.gyro_valid = bool(valid)

    class Provider:
        def __init__(self, arrays):
            self.arrays = arrays

        def get_num_data(self, sid):
            assert sid.name == "1202-1", sid.name
            return len(self.arrays["t_ns"])

        def get_imu_data_by_index(self, sid, i):
            a = self.arrays
            return MotionData(a["t_ns"][i], a["imu"][i], a["valid"][i])

    def create_vrs_data_provider(path):
        try:
            with np.load(path) as npz:
                return Provider({k: npz[k] for k in ("t_ns", "imu", "valid")})
        except Exception:
            return None  # as the real factory does for a file it cannot open

    class StreamId:
        def __init__(self, name):
            self.name = name

    package = types.ModuleType("projectaria_tools")
    core = types.ModuleType("projectaria_tools.core")
    data_provider = types.ModuleType("projectaria_tools.core.data_provider")
    stream_id = types.ModuleType("projectaria_tools.core.stream_id")
    data_provider.create_vrs_data_provider = create_vrs_data_provider
    stream_id.StreamId = StreamId
    package.core, core.data_provider, core.stream_id = core, data_provider, stream_id
    return {
        "projectaria_tools": package,
        "projectaria_tools.core": core,
        "projectaria_tools.core.data_provider": data_provider,
        "projectaria_tools.core.stream_id": stream_id,
    }


# Variants (added to a tree by the tests that need them)
def egoexo_pkl_bytes(uid: str, rate: float = 1000.0, acc_y: float = 0.0) -> bytes:
    """A processed_imu.pkl of the take ``uid`` (device ns, ``data`` (6, N)), acc_y set to
    ``acc_y`` so a test can tell which source a window came from."""
    t_ns, imu, _ = egoexo_device_imu(uid, rate)
    imu[:, 1] = acc_y
    payload = {"timestamps": t_ns, "data": imu.T.copy(), "invalid_record_count": 0}
    return pickle.dumps(payload, protocol=4)


def write_egoexo_user_imu(
    folder: Path,
    uid: str,
    start_s: float,
    end_s: float,
    fmt: str = "csv",
    acc_y: float = 0.0,
    rate: float = 1000.0,
) -> Path:
    """A per-take IMU file ``folder/<uid>.csv|.npz`` on the take timeline from ``start_s`` to
    ``end_s`` (the marker on gyro_z, acc_y set to ``acc_y``)."""
    t = start_s + np.arange(int(round((end_s - start_s) * rate)) + 1) / rate
    imu = _imu(t)
    imu[:, 1] = acc_y
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uid}.{fmt}"
    if fmt == "npz":
        np.savez(path, t_s=t, imu=imu)
    else:
        rows = np.column_stack([t, imu])
        header = "t_s,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n"
        path.write_text(header + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows))
    return path


# ---------------------------------------------------------------------------------- Ego4D
EGO4D_HEADER = (
    "component_idx,component_timestamp_ms,canonical_timestamp_ms,"
    "gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"
)
EGO4D_VIDEOS = {
    # uid: (scenarios, has_imu, csv written, duration s, narrations pass 1, pass 2)
    "v-cook": (["Cooking"], True, True, 20.0, [3.0, 10.0], [18.5]),
    "v-multi": (["Carpenter", "Cooking"], True, True, 12.0, [5.0], []),
    "v-lost": (["Cooking"], True, False, 12.0, [5.0, 6.0], []),
    "v-noimu": (["Eating"], False, False, 12.0, [4.0], []),
    "v-walk": ("Walking on street", True, True, 15.0, [1.0, 7.25, 14.0], []),
}


def make_ego4d(root: Path, meta_at: str = "root") -> Path:
    """The ego4d CLI's tree: ego4d.json (at ``meta_at``: root or v2), v2/annotations/
    narration.json, v2/imu/<video_uid>.csv at ~200 Hz with two components, NULL canonical
    timestamps, out-of-order rows and empty acceleration cells."""
    v2 = root / "v2"
    (v2 / "annotations").mkdir(parents=True)
    (v2 / "imu").mkdir()
    (v2 / "full_scale").mkdir()
    videos, narrations = [], {}
    for k, (uid, (scen, has_imu, csv, duration, p1, p2)) in enumerate(EGO4D_VIDEOS.items()):
        videos.append(
            {
                "video_uid": uid,
                "scenarios": scen,
                "has_imu": has_imu,
                "duration_sec": duration,
                "video_metadata": {"video_duration_sec": duration, "fps": 30.0},
                "fb_participant_id": 500 + k,
                "video_components": [],
            }
        )
        passes = {"status": "complete"}
        for name, times in (("narration_pass_1", p1), ("narration_pass_2", p2)):
            if times:
                passes[name] = {
                    "narrations": [
                        {
                            "timestamp_sec": t,
                            "timestamp_frame": int(t * 30),
                            "narration_text": f"#C C opens the Door {t:g}",
                            "annotation_uid": name,
                        }
                        for t in times
                    ],
                    "summaries": [],
                }
        narrations[uid] = passes
        if csv:
            (v2 / "imu" / f"{uid}.csv").write_text(_ego4d_csv(duration))
        if uid == "v-cook":
            (v2 / "full_scale" / f"{uid}.mp4").write_bytes(b"\x00")
    meta = {"version": "v2", "videos": videos, "clips": []}
    (root if meta_at == "root" else v2).joinpath("ego4d.json").write_text(json.dumps(meta))
    (v2 / "annotations" / "narration.json").write_text(json.dumps(narrations))
    return root


def _ego4d_csv(duration: float) -> str:
    step_ms = 4.975
    t = np.arange(-0.5, duration + 0.5, step_ms / 1000.0)  # IMU runs past both video ends
    imu = _imu(t)
    lines = [EGO4D_HEADER]
    half = len(t) // 2
    for i, (ti, row) in enumerate(zip(t, imu, strict=True)):
        component = 0 if i < half else 1
        comp_ms = (ti - (t[half] if component else t[0])) * 1000.0
        canonical = "" if ti < -0.3 else f"{ti * 1000.0:.3f}"  # NULL outside the video
        acc = ["", "", ""] if i % 50 == 7 else [f"{v:.6f}" for v in row[:3]]
        gyro = [f"{v:.6f}" for v in row[3:]]
        lines.append(",".join([str(component), f"{comp_ms:.3f}", canonical, *gyro, *acc]))
    body = lines[1:]
    for i in range(100, len(body) - 1, 400):  # swapped neighbours: sort by canonical time
        body[i], body[i + 1] = body[i + 1], body[i]
    return "\n".join([lines[0], *body]) + "\n"


# ------------------------------------------------------------------------------ RealWorld
RW_T0_MS = 1_435_000_000_000  # 2015-06-22 UTC; gyro_z = MARK * (ms - RW_T0_MS) / 1000
POSITIONS = ("chest", "forearm", "head", "shin", "thigh", "upperarm", "waist")
# (proband, activity): (kind, seconds, acc start offset s, gyro start offset s)
REALWORLD = {
    (1, "walking"): ("plain", 16.0, 0.0, 0.31),
    (1, "sitting"): ("plain", 7.0, 0.5, 0.0),
    (4, "climbingup"): ("zipzip", 11.0, 0.2, 0.1),
    (6, "sitting"): ("infix2", 10.0, 0.0, 0.05),
    (2, "climbingup"): ("nohead", 10.0, 0.0, 0.0),
    (6, "jumping"): ("nogyrohead", 10.0, 0.0, 0.0),
    (3, "running"): ("plain", 2.0, 0.0, 0.0),  # shorter than half a window
}


def realworld_csv(seconds: float, start_s: float, base_ms: int, gyro: bool) -> str:
    """One member: ~50 Hz with a few ms of jitter; the marker on the third axis of gyro."""
    n = int(seconds * 50)
    jitter = ((np.arange(n) * 3) % 7 - 3).astype(float)
    t_ms = base_ms + np.round(start_s * 1000 + np.arange(n) * 20 + jitter).astype(np.int64)
    t_rel = (t_ms - RW_T0_MS) / 1000.0
    xyz = _imu(t_rel)[:, 3:] if gyro else _imu(t_rel)[:, :3]
    rows = [
        f"{i + 1},{t},{x:.6f},{y:.6f},{z:.7f}"
        for i, (t, (x, y, z)) in enumerate(zip(t_ms, xyz, strict=True))
    ]
    return "id,attr_time,attr_x,attr_y,attr_z\n" + "\n".join(rows) + "\n"


def make_realworld(root: Path) -> Path:
    """realworld2016_dataset/proband<N>/data/{acc,gyr}_<activity>_csv.zip with the quirks:
    zip-of-zips sessions, the _2 infix, a position with no data, a missing gyro member, a
    recording shorter than a window, a readMe member."""
    for (proband, activity), (kind, seconds, acc_off, gyro_off) in REALWORLD.items():
        data = root / "realworld2016_dataset" / f"proband{proband}" / "data"
        data.mkdir(parents=True, exist_ok=True)
        base = RW_T0_MS + proband * 3_600_000
        for sensor, prefix, off in (("acc", "acc", acc_off), ("gyr", "Gyroscope", gyro_off)):
            gyro = sensor == "gyr"
            with zipfile.ZipFile(data / f"{sensor}_{activity}_csv.zip", "w") as zf:
                zf.writestr("readMe", "> entries  12345\n")
                if kind == "zipzip":
                    for session in (1, 2):
                        inner_name = (
                            f"{sensor}_{activity}_{session}_csv.zip"
                            if session > 1 or sensor == "acc"
                            else f"{sensor}_{activity}_csv.zip"
                        )
                        infix = f"_{session}" if session > 1 else ""
                        buf = io.BytesIO()
                        with zipfile.ZipFile(buf, "w") as inner:
                            for pos in POSITIONS:
                                start = off + (session - 1) * 100.0
                                inner.writestr(
                                    f"{prefix}_{activity}{infix}_{pos}.csv",
                                    realworld_csv(seconds, start, base, gyro),
                                )
                        zf.writestr(inner_name, buf.getvalue())
                    continue
                for pos in POSITIONS:
                    if kind == "nohead" and pos == "head":
                        continue
                    if kind == "nogyrohead" and pos == "head" and gyro:
                        continue
                    infix = "_2" if kind == "infix2" else ""
                    zf.writestr(
                        f"{prefix}_{activity}{infix}_{pos}.csv",
                        realworld_csv(seconds, off, base, gyro),
                    )
    return root


def realworld_start(proband: int, activity: str, session: int = 1) -> float:
    """Where the recording's first window starts, in marker seconds: the later start."""
    _, _, acc_off, gyro_off = REALWORLD[(proband, activity)]
    base = proband * 3600.0 + (session - 1) * 100.0
    jitter0 = -3 / 1000.0  # the first sample's jitter ((0 * 3) % 7 - 3 ms)
    return base + max(acc_off, gyro_off) + jitter0


def rewrite_zip(path: Path, drop: tuple[str, ...] = (), put: dict[str, str] | None = None) -> None:
    """Rewrite the archive ``path`` without the members named in ``drop`` and with the members
    of ``put`` (name -> text) added or replaced."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n not in drop}
    members.update({n: t.encode() for n, t in (put or {}).items()})
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    make_egoexo4d(out / "egoexo4d")
    make_ego4d(out / "ego4d")
    make_realworld(out / "realworld")
    print(out)
