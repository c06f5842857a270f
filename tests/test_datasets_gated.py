"""Licence-gated datasets (EgoExo4D, Ego4D, RealWorld) and the official archive layouts of
HAPT and Daphnet, on small files the tests write in those layouts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import primus_core
from primus_core.config import IMUContract
from primus_core.data.windows import load_windows
from primus_core.errors import DataError
from primus_datasets import clean_narration

G = 9.80665


def _imu_rows(seconds: float, rate: float, t_offset: float = 0.0) -> np.ndarray:
    """(N, 7): t_s then acc_x = t (a clock we can read back), acc_z = 9.8, gyro_y = 0.5."""
    t = t_offset + np.arange(int(seconds * rate)) / rate
    rows = np.zeros((len(t), 7))
    rows[:, 0] = t
    rows[:, 1] = t
    rows[:, 3] = 9.8
    rows[:, 5] = 0.5
    return rows


def _write_csv(path: Path, header: list[str], rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows)
    path.write_text(",".join(header) + "\n" + body + "\n")


# ------------------------------------------------------------------------------- EgoExo4D
def _egoexo(root: Path) -> Path:
    takes = [
        {
            "take_uid": "t-cook",
            "take_name": "upenn_cooking_1",
            "parent_task_name": "Cooking",
            "task_name": "Cooking Tomato & Eggs",
            "participant_uid": 11,
        },
        {
            "take_uid": "t-covid",
            "take_name": "unc_health_2",
            "parent_task_name": "Health",
            "task_name": "Covid-19 Rapid Antigen Test",
            "participant_uid": 12,
        },
        {
            "take_uid": "t-ball",
            "take_name": "fair_basketball_3",
            "parent_task_name": "Basketball",
            "task_name": "Basketball Drills - Layup",
            "participant_uid": 11,
        },
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "takes.json").write_text(json.dumps(takes))

    def described(*items):
        return [
            {
                "rater_unsure": False,
                "descriptions": [
                    {"text": text, "timestamp": ts, "unsure": False} for text, ts in items
                ],
            }
        ]

    train = {
        "annotations": {
            "t-cook": described(
                ("#C C picks up the Knife.", 10.0),
                ("C cuts #unsure!", 0.5),
                ("C stirs the pan", 19.9),
            ),
            "t-covid": described(("C opens the test kit", 1.5)),
        }
    }
    val = {"annotations": {"t-ball": described(("C dribbles the ball", 6.0), ("C shoots", 7.0))}}
    (root / "annotations" / "atomic_descriptions_train.json").write_text(json.dumps(train))
    (root / "annotations" / "atomic_descriptions_val.json").write_text(json.dumps(val))
    header = ["t_s", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    _write_csv(root / "primus_imu" / "t-cook.csv", header, _imu_rows(20.0, 1000.0))
    _write_csv(root / "primus_imu" / "t-covid.csv", header, _imu_rows(3.0, 800.0))  # short take
    rows = _imu_rows(12.0, 1000.0)
    np.savez(root / "primus_imu" / "t-ball.npz", t_s=rows[:, 0], imu=rows[:, 1:].astype(np.float32))
    video = root / "takes" / "upenn_cooking_1" / "frame_aligned_videos" / "downscaled" / "448"
    video.mkdir(parents=True)
    (video / "aria01_214-1.mp4").write_bytes(b"\x00")
    return root


def test_narration_cleaning():
    assert clean_narration("#C C picks up the Knife.") == "picks up the knife"
    assert clean_narration("C cuts #unsure!") == "c cuts something"
    assert len(clean_narration("word " * 100)) == 128


def test_egoexo4d_windows_centred_and_clamped(tmp_path):
    root = _egoexo(tmp_path / "egoexo")
    ws = primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    assert ws.imu.shape == (6, 6, 250) and ws.dataset == "egoexo4d"
    clock = ws.imu[:, 0, :]  # acc_x holds the take time in seconds
    assert ws.videos[4]["path"] is None and ws.videos[2]["path"] == ws.videos[0]["path"]
    # centred on 10 s: 5 s window from 7.5 s
    assert clock[0, 0] == pytest.approx(7.5, abs=0.05) and clock[0, -1] == pytest.approx(
        12.48, abs=0.05
    )
    assert clock[1, 0] == pytest.approx(0.0, abs=0.05)  # 0.5 s clamps to the take start
    assert clock[2, -1] == pytest.approx(19.98, abs=0.05)  # 19.9 s clamps to the end
    # the 3 s take is zero-padded at the end
    assert clock[3, 140] == pytest.approx(2.8, abs=0.05) and not ws.imu[3, :, 155:].any()
    assert np.allclose(ws.imu[:5, 2, 10:-10][:, :100], 9.8, atol=1e-3)
    assert ws.class_names[ws.labels[0]] == "cooking"
    assert ws.class_names[ws.labels[3]] == "covid test"
    assert ws.class_names[ws.labels[4]] == "soccer/basketball"
    assert ws.narrations[:2] == ["picks up the knife", "c cuts something"]
    assert ws.subjects.tolist() == [0, 0, 0, 1, 0, 0]  # by participant: 11, 12, 11
    assert ws.videos[0]["path"].endswith("downscaled/448/aria01_214-1.mp4")
    assert ws.videos[0]["start_s"] == pytest.approx(7.5) and ws.videos[3]["path"] is None


def test_egoexo4d_excludes_and_cache(tmp_path):
    root = _egoexo(tmp_path / "egoexo")
    ref = {
        "type": "egoexo4d",
        "root": str(root),
        "exclude": ["t-cook@10", "t-covid"],
        "splits": ["train"],
    }
    ws = load_windows(ref, IMUContract(), tmp_path / "cache", progress=False)
    assert len(ws) == 2 and ws.narrations == ["c cuts something", "c stirs the pan"]
    assert [v["start_s"] for v in ws.videos] == [0.0, 14.98]  # 19.9 s: clamped to the IMU end


def test_egoexo4d_bad_inputs(tmp_path):
    contract = IMUContract()
    with pytest.raises(DataError, match=r"dataset 'egoexo4d': no root given .*licence"):
        primus_core.create("dataset", "egoexo4d").load(contract)
    root = _egoexo(tmp_path / "egoexo")
    (root / "primus_imu" / "t-ball.npz").unlink()
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root), missing_imu="error")
    with pytest.raises(DataError, match=r"take t-ball has no IMU"):
        adapter.load(contract)
    skipping = primus_core.create("dataset", "egoexo4d", root=str(root))
    assert len(skipping.load(contract)) == 4
    assert [r["reason"] for r in skipping.report.rows()] == [
        "take has no IMU (no per-take file, processed_imu.pkl or VRS)"
    ]
    csv = root / "primus_imu" / "t-covid.csv"
    lines = csv.read_text().splitlines()
    lines[6] = lines[4]  # a timestamp that goes back, on line 7
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"t-covid\.csv: non-monotonic .* at line 7"):
        skipping.load(contract)
    (root / "takes.json").write_text('[{"take_uid": ')
    with pytest.raises(DataError, match=r"takes\.json: line 1: invalid JSON"):
        adapter.load(contract)


def test_egoexo4d_vrs_needs_projectaria_tools(tmp_path):
    root = _egoexo(tmp_path / "egoexo")
    (root / "primus_imu" / "t-ball.npz").unlink()
    (root / "takes" / "fair_basketball_3").mkdir(parents=True)
    (root / "takes" / "fair_basketball_3" / "aria01_noimagestreams.vrs").write_bytes(b"VRS")
    try:
        import projectaria_tools  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="projectaria_tools"):
            primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())


# ---------------------------------------------------------------------------------- Ego4D
EGO4D_HEADER = [
    "component_idx",
    "component_timestamp_ms",
    "canonical_timestamp_ms",
    "gyro_x",
    "gyro_y",
    "gyro_z",
    "accl_x",
    "accl_y",
    "accl_z",
]


def _ego4d(root: Path) -> Path:
    (root / "v2" / "annotations").mkdir(parents=True)
    meta = {
        "videos": [
            {"video_uid": "v1", "scenarios": ["Cooking"]},
            {"video_uid": "v2", "scenarios": ["Carpenter", "Cooking"]},
            {"video_uid": "v3", "scenarios": ["Walking the dog"]},
        ]
    }
    (root / "ego4d.json").write_text(json.dumps(meta))
    narr = {
        "v1": {
            "narration_pass_1": {
                "narrations": [
                    {"timestamp_sec": 4.0, "narration_text": "#C C washes a plate"},
                    {"timestamp_sec": 10.5, "narration_text": "#C C dries the plate."},
                ]
            }
        },
        "v2": {
            "narration_pass_1": {
                "narrations": [{"timestamp_sec": 3.0, "narration_text": "#C C saws #unsure"}]
            }
        },
        "v3": {
            "narration_pass_1": {
                "narrations": [{"timestamp_sec": 1.0, "narration_text": "#C C walks"}]
            }
        },  # no IMU downloaded
    }
    (root / "v2" / "annotations" / "narration.json").write_text(json.dumps(narr))
    for uid in ("v1", "v2"):
        clock = _imu_rows(12.0, 200.0)
        rows = np.zeros((len(clock), 9))
        rows[:, 0] = np.arange(len(clock))
        rows[:, 1] = rows[:, 2] = clock[:, 0] * 1000.0
        rows[:, 4] = 0.5  # gyro_y
        rows[:, 6] = clock[:, 0]  # accl_x = time
        rows[:, 8] = 9.8
        _write_csv(root / "v2" / "imu" / f"{uid}.csv", EGO4D_HEADER, rows)
    return root


def test_ego4d_windows_around_narrations(tmp_path):
    root = _ego4d(tmp_path / "ego4d")
    ws = load_windows(
        {"type": "ego4d", "root": str(root), "multi_scenario": "first"},
        IMUContract(),
        tmp_path / "c",
        progress=False,
    )
    assert ws.imu.shape == (3, 6, 250)
    assert ws.class_names == ["Carpenter", "Cooking", "Walking the dog"]
    assert ws.labels.tolist() == [1, 1, 0]
    assert ws.narrations == ["washes a plate", "dries the plate", "saws something"]
    assert ws.imu[0, 0, 0] == pytest.approx(1.5, abs=0.02)  # centred on 4 s
    assert ws.imu[1, 0, -1] == pytest.approx(11.98, abs=0.02)  # 10.5 s clamps to the end
    assert np.allclose(ws.imu[:, 4, 10:-10], 0.5, atol=1e-3)  # gyro_y, by column name
    assert ws.subjects[0] == ws.subjects[1] != ws.subjects[2]
    assert ws.videos[2] == {"path": None, "start_s": 0.5, "end_s": 5.5}


def test_ego4d_bad_columns(tmp_path):
    root = _ego4d(tmp_path / "ego4d")
    csv = root / "v2" / "imu" / "v1.csv"
    csv.write_text(csv.read_text().replace("accl_z", "temperature", 1))
    with pytest.raises(DataError, match=r"v1\.csv: line 1: missing column\(s\) accl_z"):
        primus_core.create("dataset", "ego4d", root=str(root)).load(IMUContract())


# ------------------------------------------------------------------------------ RealWorld
def _realworld_csv(seconds: float, t0_ms: int, value: float, rate: float = 50.0) -> str:
    n = int(seconds * rate)
    rows = [
        f"{i + 1},{t0_ms + round(i * 1000 / rate)},{value},{value + 1},{value + 2}"
        for i in range(n)
    ]
    return "id,attr_time,attr_x,attr_y,attr_z\n" + "\n".join(rows) + "\n"


def _realworld(root: Path) -> Path:
    plan = {1: {"walking": 12.0, "sitting": 7.0}, 2: {"walking": 10.0}, 3: {"running": 6.0}}
    for proband, activities in plan.items():
        data = root / "realworld2016_dataset" / f"proband{proband}" / "data"
        data.mkdir(parents=True)
        for activity, seconds in activities.items():
            t0 = 1_435_000_000_000 + proband * 10**6
            with zipfile.ZipFile(data / f"acc_{activity}_csv.zip", "w") as zf:
                for k, position in enumerate(["chest", "head", "waist"]):
                    zf.writestr(
                        f"acc_{activity}_{position}.csv", _realworld_csv(seconds, t0, float(k))
                    )
            with zipfile.ZipFile(data / f"gyr_{activity}_csv.zip", "w") as zf:
                for k, position in enumerate(["chest", "head", "waist"]):
                    name = "Gyroscope" if proband == 2 else "gyr"
                    zf.writestr(
                        f"{name}_{activity}_{position}.csv",
                        _realworld_csv(seconds + 1, t0 + 7, 0.1 * k),
                    )
    return root


def test_realworld_official_layout(tmp_path):
    root = _realworld(tmp_path / "rw")
    ws = primus_core.create("dataset", "realworld", root=str(root), position="waist").load(
        IMUContract()
    )
    # 12 s -> 2 windows (the 2 s tail is under half a window), 7 s -> 1, 10 s -> 2, 6 s -> 1
    assert ws.class_names == [
        "climbingdown",
        "climbingup",
        "jumping",
        "lying",
        "running",
        "sitting",
        "standing",
        "walking",
    ]
    per_source = {
        (int(s), ws.class_names[lab]) for s, lab in zip(ws.subjects, ws.labels, strict=True)
    }
    assert per_source == {(1, "walking"), (1, "sitting"), (2, "walking"), (3, "running")}
    assert len(ws) == 2 + 1 + 2 + 1
    assert np.allclose(ws.imu[:, :3, :200], np.array([2.0, 3.0, 4.0])[None, :, None], atol=1e-6)
    assert np.allclose(ws.imu[:, 3:, :200], np.array([0.2, 1.2, 2.2])[None, :, None], atol=1e-6)
    head = primus_core.create("dataset", "realworld", root=str(root)).load(IMUContract())
    assert np.allclose(head.imu[:, 0, :200], 1.0)
    assert all(t for t in head.narrations)


def test_realworld_bad_inputs(tmp_path):
    with pytest.raises(
        DataError,
        match=r"dataset 'realworld': .*/nowhere does not exist.*"
        r"uni-mannheim",
    ):
        primus_core.create("dataset", "realworld", root=str(tmp_path / "nowhere")).sources()
    root = _realworld(tmp_path / "rw")
    acc = root / "realworld2016_dataset" / "proband3" / "data" / "acc_running_csv.zip"
    text = _realworld_csv(6.0, 0, 1.0).splitlines()
    text[5] = text[5] + ",7"
    with zipfile.ZipFile(acc, "w") as zf:
        zf.writestr("acc_running_head.csv", "\n".join(text))
    with pytest.raises(
        DataError,
        match=r"acc_running_csv\.zip:acc_running_head\.csv: line 6: "
        r"expected 5 columns, got 6",
    ):
        primus_core.create("dataset", "realworld", root=str(root)).load(IMUContract())


# ------------------------------------------------------------ HAPT and Daphnet archives
def test_hapt_uci_archive_layout(tmp_path):
    raw = tmp_path / "HAPT Data Set" / "RawData"
    raw.mkdir(parents=True)
    n = 50 * 30
    acc = np.tile([1.0, 0.0, 0.0], (n, 1))
    np.savetxt(raw / "acc_exp01_user01.txt", acc, fmt="%.6f")
    np.savetxt(raw / "gyro_exp01_user01.txt", np.zeros((n, 3)), fmt="%.6f")
    np.savetxt(raw / "acc_exp02_user02.txt", acc[:700], fmt="%.6f")
    np.savetxt(raw / "gyro_exp02_user02.txt", np.zeros((700, 3)), fmt="%.6f")
    # exp user activity start end (1-based, inclusive)
    (raw / "labels.txt").write_text("1 1 5 1 500\n1 1 1 501 1500\n2 2 7 1 700\n")
    ws = primus_core.create("dataset", "hapt", root=str(tmp_path)).load(IMUContract())
    assert ws.labels.tolist() == [4, 4, 0, 0, 0, 0, 6, 6, 6]
    assert ws.subjects.tolist() == [1] * 6 + [2] * 3
    assert np.allclose(ws.imu[0, 0, 10:-10], G, atol=1e-4)
    assert not ws.imu[-1, :, 200:].any()  # 14 s: the 4 s tail is zero-padded
    (raw / "gyro_exp02_user02.txt").write_text("0 0 0\n0 0\n")
    with pytest.raises(DataError, match=r"gyro_exp02_user02\.txt: line 2: expected 3 columns"):
        primus_core.create("dataset", "hapt", root=str(tmp_path)).load(IMUContract())


def test_daphnet_uci_archive_layout(tmp_path):
    folder = tmp_path / "dataset_fog_release" / "dataset"
    folder.mkdir(parents=True)
    n = 64 * 12
    table = np.zeros((n, 11))
    table[:, 0] = np.arange(n) * 15.625
    table[:, 8] = 1000.0  # trunk vertical, mg
    table[:, 2] = 500.0  # ankle vertical
    np.savetxt(folder / "S02R01.txt", table, fmt="%g")
    ws = primus_core.create("dataset", "daphnet", root=str(tmp_path)).load(IMUContract())
    assert ws.imu.shape == (2, 6, 250) and ws.subjects.tolist() == [2, 2]
    assert np.allclose(ws.imu[:, 1, 10:-10], G, atol=1e-3)
    ankle = primus_core.create("dataset", "daphnet", root=str(tmp_path), position="ankle")
    assert np.allclose(ankle.load(IMUContract()).imu[:, 1, 10:-10], G / 2, atol=1e-3)
    table[100, 0] = table[99, 0]
    np.savetxt(folder / "S02R01.txt", table, fmt="%g")
    with pytest.raises(DataError, match=r"S02R01\.txt: duplicated timestamp at line 101"):
        primus_core.create("dataset", "daphnet", root=str(tmp_path)).load(IMUContract())


def test_cli_prepare_gated_with_root(cli, tmp_path):
    root = _realworld(tmp_path / "rw")
    res = cli("data", "prepare", "realworld", "--root", root, "--set", "position=chest")
    assert "realworld: 6 windows" in res.out
    info = json.loads(
        cli("data", "info", "realworld", "--root", root, "--set", "position=chest", "--json").out
    )
    assert info["windows"] == 6 and info["subjects"] == 3 and info["params"]["position"] == "chest"
    eroot = _egoexo(tmp_path / "egoexo")
    res = cli("data", "info", "egoexo4d", "--root", eroot, "--json")
    out = json.loads(res.out)
    assert out["windows"] == 6 and out["videos"] and out["narrations"]
    res = cli("data", "prepare", "ego4d", "--root", tmp_path / "missing", expect=1)
    assert "ego4d-data.org" in res.err


def test_weak_narrations_use_six_templates_naming_the_activity():
    """docs/datasets.md: weak narrations from labels, "a person is walking up the stairs",
    "someone walking", ... six templates: 600 windows of one class give exactly six distinct
    sentences, the doc's two examples among them, each naming the activity."""
    from primus_core.data.windows import weak_narrations

    texts = weak_narrations(np.zeros(600, np.int64), ["walking up the stairs"], key="rec-1")
    distinct = set(texts)
    assert len(distinct) == 6
    assert {"a person is walking up the stairs", "someone walking up the stairs"} <= distinct
    assert all("walking up the stairs" in t for t in distinct)
    assert weak_narrations(np.array([-1, 0]), ["sitting"], key="k")[0] == ""
