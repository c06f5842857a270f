"""Test helpers: tiny H.264 videos whose frames encode their own index, and a small EgoExo4D tree
in the official layout (docs/datasets.md, shared DATASET_LAYOUTS section 1) with per-take IMU
in primus' own format (IMU_DIR/<take_uid>.npz, given to the adapter as ``imu_dir``)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 64, 48
STEP = 8  # grey levels per index unit: left half = STEP * (i // 32), right half = STEP * (i % 32)


def frame_image(index: int) -> np.ndarray:
    """uint8 (HEIGHT, WIDTH, 3): the left half's grey level is index // 32, the right's index % 32."""
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:, : WIDTH // 2] = STEP * (index // 32)
    image[:, WIDTH // 2 :] = STEP * (index % 32)
    return image


def frame_index(crop: np.ndarray) -> int:
    """The index a 224 x 224 centre crop of frame_image(index) shows (read away from the edge)."""
    left, right = float(crop[112, 40].mean()), float(crop[112, 190].mean())
    return int(round(left / STEP)) * 32 + int(round(right / STEP))


def write_video(path: Path, seconds: float, fps: int = 30, gop: int = 12) -> Path:
    """A lossless H.264 .mp4 of seconds * fps frames, a keyframe every ``gop`` frames (so reading
    a span must seek and decode from the keyframe before it)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"qp": "0", "g": str(gop), "keyint_min": str(gop), "bf": "0"}
        for i in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


# take_uid, take_name, participant, task, video seconds (None: no video), description times
TAKES = [
    ("t-cook", "upenn_cooking_1", 11, "Cooking", 12.0, [1.0, 3.0, 5.0, 6.0, 7.5, 10.5]),
    ("t-bike", "cmu_bike01_2", 12, "Bike Repair", 12.0, [2.0, 4.0, 6.0, 8.0, 9.0, 11.0]),
    ("t-dance", "iiith_dance_3", 13, "Dance", None, [3.0, 5.0, 7.0, 9.0]),
]


def make_egoexo_tree(root: Path, imu_seconds: float = 14.0) -> dict:
    """takes.json, annotations/atomic_descriptions_{train,val}.json, captures/<c>/timesync.csv,
    takes/<take>/frame_aligned_videos/aria01_214-1.mp4 (not for the last take), and the IMU at
    root/imu/<take_uid>.npz. Returns {"root", "imu_dir", "videos": {take_uid: path or None}}."""
    root.mkdir(parents=True, exist_ok=True)
    imu_dir = root / "imu"
    imu_dir.mkdir()
    takes, annotations, videos = [], {}, {}
    for uid, name, participant, task, seconds, times in TAKES:
        capture = f"{name.rsplit('_', 1)[0]}_capture"
        takes.append(
            {
                "take_uid": uid,
                "take_name": name,
                "root_dir": f"takes/{name}",
                "participant_uid": participant,
                "parent_task_name": task,
                "task_name": task,
                "duration_sec": seconds or imu_seconds,
                "timesync_start_idx": 0,
                "timesync_end_idx": 10,
                "capture": {
                    "capture_name": capture,
                    "root_dir": f"captures/{capture}",
                    "cameras": [
                        {"cam_id": "aria01", "is_ego": True, "device_type": "aria"},
                        {"cam_id": "cam01", "is_ego": False, "device_type": "gopro"},
                    ],
                },
            }
        )
        annotations[uid] = [
            {
                "annotation_uid": f"a-{uid}",
                "rejected": False,
                "descriptions": [
                    {"text": f"C does step {k} of {task}", "timestamp": t, "subject": "C"}
                    for k, t in enumerate(times)
                ],
            }
        ]
        sync = root / "captures" / capture / "timesync.csv"
        sync.parent.mkdir(parents=True, exist_ok=True)
        ns = 1_000_000_000 + np.arange(12) * 33_333_333
        sync.write_text(
            "aria01_214-1_capture_timestamp_ns,cam01_pts\n"
            + "".join(f"{t},{k}\n" for k, t in enumerate(ns))
        )
        folder = root / "takes" / name / "frame_aligned_videos"
        folder.mkdir(parents=True)
        videos[uid] = str(write_video(folder / "aria01_214-1.mp4", seconds)) if seconds else None
        t_s = np.arange(int(imu_seconds * 200)) / 200.0
        imu = np.zeros((len(t_s), 6), np.float32)
        imu[:, 0] = np.sin(t_s * (participant - 9))  # something to learn, different per take
        imu[:, 2] = 9.81
        imu[:, 4] = np.cos(t_s * 3.0)
        np.savez(imu_dir / f"{uid}.npz", t_s=t_s, imu=imu)
    (root / "takes.json").write_text(json.dumps(takes))
    (root / "annotations").mkdir()
    ann = {"ds": "20240324_01:26:30", "annotations": annotations}
    (root / "annotations" / "atomic_descriptions_train.json").write_text(json.dumps(ann))
    # the paper recipes validate on the official val split: the first take's annotations again
    first = dict(list(annotations.items())[:1])
    val = {"ds": "20240324_01:26:30", "annotations": first}
    (root / "annotations" / "atomic_descriptions_val.json").write_text(json.dumps(val))
    return {"root": root, "imu_dir": imu_dir, "videos": videos}
