"""EgoExo4D, Ego4D and RealWorld read from trees in their official download layouts (built by
tests/official_trees.py): every window where the rules put it, within one sample, read back
from the gyro_z time marker; every skip reported; bad variants are one clear error that leaves
nothing behind."""

from __future__ import annotations

import json
import math
import os
import pickle
import string
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import primus_core
from primus_core.config import IMUContract
from primus_core.data.windows import cache_path, create_adapter, load_windows, prepare, read_meta
from primus_core.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
import official_trees as trees  # noqa: E402

RATE = 50.0
ONE_SAMPLE = 1 / RATE


def starts_from_marker(ws) -> np.ndarray:
    """Where each window starts on its timeline, read from gyro_z = MARK * t."""
    return np.asarray(ws.imu[:, 5, 0], np.float64) / trees.MARK


@pytest.fixture
def aria(monkeypatch):
    """projectaria_tools stand-in (a VRS cannot be written here; see official_trees)."""
    for name, module in trees.fake_projectaria_tools().items():
        monkeypatch.setitem(sys.modules, name, module)


def _rows(ws) -> dict:
    return {(v["path"] or "").split("/takes/")[-1]: v for v in ws.videos}


def _report(adapter) -> dict[str, int]:
    return {r["reason"]: r["count"] for r in adapter.report.rows()}


# ------------------------------------------------------------------------------- EgoExo4D
def _expected_centred(t: float, duration: float) -> float:
    return round(min(max(t - 2.5, 0.0), max(duration - 5.0, 0.0)) * RATE) / RATE


def test_egoexo4d_windows_on_the_take_timeline(tmp_path, aria):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root))
    ws = adapter.load(IMUContract())
    expected = []
    for uid in ("t-bike", "t-cook", "t-covid", "t-dance"):  # sorted per split: train, val
        duration = trees.EGOEXO_TAKES[uid][2]
        times = [t for rejected, ts in trees.EGOEXO_DESCRIPTIONS[uid] if not rejected for t in ts]
        expected += [_expected_centred(t, duration) for t in times]
    got = starts_from_marker(ws)
    error = np.abs(got - np.array(expected))
    print(f"egoexo4d worst placement error: {error.max() * 1000:.3f} ms")
    assert error.max() < ONE_SAMPLE
    starts = np.array([v["start_s"] for v in ws.videos])
    assert np.allclose(starts, expected, atol=1e-9)  # video span = the IMU window
    assert all(v["end_s"] == pytest.approx(v["start_s"] + 5.0) for v in ws.videos)
    paths = [v["path"] for v in ws.videos]
    assert paths[0].endswith(
        "takes/cmu_bike01_2/frame_aligned_videos/downscaled/448/aria06_214-1.mp4"
    )
    assert paths[-1].endswith("takes/uniandes_dance_4/frame_aligned_videos/aria01_214-1.mp4")
    assert ws.class_names[ws.labels[0]] == "bike repair"
    assert ws.class_names[ws.labels[5]] == "cooking" and ws.labels[-1] == 6  # "dance" in name
    assert ws.narrations[0] == "checks the bike at 1 something"
    # the 3 s take: zero-padded after its end; invalid VRS records (1e6) never show up
    covid = 7
    assert not ws.imu[covid, :, 151:].any() and ws.imu[covid, 2, 100] == pytest.approx(trees.G)
    assert np.abs(ws.imu[:, :5]).max() < 20
    report = _report(adapter)
    assert report == {
        "annotation marked rejected": 1,
        "take has no IMU (no per-take file, processed_imu.pkl or VRS)": 1,
        "take not in takes.json": 1,
    }


def test_egoexo4d_reference_options_match_an_independent_implementation(tmp_path, aria):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    bad = tmp_path / "bad_imu.txt"
    bad.write_text("t-bike_7_12\nother_1_6\n")
    adapter = primus_core.create(
        "dataset",
        "egoexo4d",
        root=str(root),
        annotators="first",
        include_rejected=True,
        cleaning="reference",
        windowing="reference",
        bad_windows=str(bad),
    )
    ws = adapter.load(IMUContract())

    def window(t, duration, w=2.5):  # the reference dataloader's rule, written out again
        if t <= w * 2:
            a, b = 0.0, w * 2
        elif t + w * 2 >= duration:
            a, b = duration - w * 2, duration
        else:
            a, b = t - w, t + w
        a, b = int(math.floor(a)), int(math.floor(b))
        if a < 0 or b > duration or f"{uid}_{a}_{b}" in {"t-bike_7_12"} or b - a != w * 2:
            return None
        return a

    def clean(text):  # the reference clean_narration_text, written out again
        text = text.replace("#C C ", "").replace("C", "").replace("#unsure", "something")
        return text.strip().strip(string.punctuation).lower()[:128]

    expected, texts = [], []
    for uid in ("t-bike", "t-cook", "t-covid", "t-dance"):
        duration = trees.EGOEXO_TAKES[uid][2]
        first = trees.EGOEXO_DESCRIPTIONS[uid][0][1]
        for t in first:
            if window(t, duration) is not None:
                expected.append(window(t, duration))
                texts.append(clean(f"#C C Checks the Bike at {t:g}, #unsure!"))
    error = np.abs(starts_from_marker(ws) - np.array(expected, float))
    print(f"egoexo4d (reference windowing) worst placement error: {error.max() * 1000:.3f} ms")
    assert error.max() < ONE_SAMPLE
    assert ws.narrations == texts and texts[0] == "hecks the bike at 1, something"
    report = _report(adapter)
    assert report["listed in bad_windows"] == 1
    assert report["reference window not 2w whole seconds inside the take"] == 1  # 3 s take


def test_egoexo4d_prepare_report_strict_and_fingerprint(tmp_path, aria, cli, primus_home):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    cache = tmp_path / "cache"
    res = cli("data", "prepare", "egoexo4d", "--root", root, "--cache-dir", cache)
    assert "egoexo4d: 10 windows" in res.out
    assert "skipped         1 window: annotation marked rejected" in res.out
    assert "kept" in res.out and "take not in takes.json" in res.out
    out = json.loads(
        cli("data", "prepare", "egoexo4d", "--root", root, "--cache-dir", cache, "--json").out
    )
    assert out["fresh"] is False and out["report"]["kept"]["windows"] == 10
    reasons = {r["reason"] for r in out["report"]["rows"]}
    assert "take not in takes.json" in reasons
    assert read_meta(Path(out["folder"]))["report"] == out["report"]
    res = cli(
        "data", "prepare", "egoexo4d", "--root", root, "--cache-dir", cache, "--strict", expect=1
    )
    assert "--strict and" in res.err and "annotation marked rejected" in res.err
    # the extracted VRS IMU lives under $PRIMUS_HOME, never in the dataset folder
    assert list((primus_home / "extracted" / "egoexo4d").glob("t-cook-*.npz"))
    # changed source data: a new cache key, prepared again without --force
    ref = {"type": "egoexo4d", "root": str(root)}
    before = cache_path(create_adapter(ref), IMUContract(), cache)
    pkl = root / "takes" / "cmu_bike01_2" / "processed_imu.pkl"
    os.utime(pkl, ns=(pkl.stat().st_atime_ns, pkl.stat().st_mtime_ns + 10**9))
    after = cache_path(create_adapter(ref), IMUContract(), cache)
    assert before != after and before.exists() and not after.exists()


def _snapshot(*folders: Path) -> dict:
    return {
        str(p): p.stat().st_size
        for folder in folders
        if folder.exists()
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    "variant, message",
    [
        (
            "pkl_nan",
            r"processed_imu\.pkl: non-finite values \(NaN/inf\) in 40 row\(s\) starting "
            r"at sample 500",
        ),
        ("pkl_back", r"processed_imu\.pkl: non-monotonic \(goes back\) timestamp at sample 301"),
        ("user_truncated", r"t-covid\.csv: line 11: expected 7 columns, got 4"),
        (
            "vrs_unreadable",
            r"aria01_noimagestreams\.vrs: unreadable VRS \(projectaria_tools "
            r"could not open it\)",
        ),
        (
            "timesync_empty",
            r"timesync\.csv: line 6: column aria06_214-1_capture_timestamp_ns "
            r"is empty",
        ),
    ],
)
def test_egoexo4d_bad_variants_leave_nothing(tmp_path, aria, primus_home, variant, message):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    take = root / "takes" / "cmu_bike01_2"
    if variant.startswith("pkl"):
        payload = pickle.loads((take / "processed_imu.pkl").read_bytes())
        if variant == "pkl_nan":
            payload["data"][2, 500:540] = np.nan
        else:
            payload["timestamps"][301] = payload["timestamps"][299]
        (take / "processed_imu.pkl").write_bytes(pickle.dumps(payload))
    elif variant == "user_truncated":
        csv = root / "primus_imu" / "t-covid.csv"
        lines = csv.read_text().splitlines()
        lines[10] = ",".join(lines[10].split(",")[:4])
        csv.write_text("\n".join(lines))
    elif variant == "vrs_unreadable":
        (root / "takes" / "upenn_cooking_3" / "aria01_noimagestreams.vrs").write_bytes(b"VRS\0")
    else:
        sync = root / "captures" / "cmu_bike01" / "timesync.csv"
        lines = sync.read_text().splitlines()
        lines[5] = "5005,5,,5"  # row timesync_start_idx + 1 = 4, line 6
        sync.write_text("\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    extracted = primus_home / "extracted"
    before, before_extracted = _snapshot(root), _snapshot(extracted)
    with pytest.raises(DataError, match=message) as info:
        prepare({"type": "egoexo4d", "root": str(root)}, IMUContract(), cache, progress=False)
    assert "\n" not in str(info.value)
    assert _snapshot(root) == before  # nothing written into the dataset folder
    if variant == "vrs_unreadable":  # and no extraction of the bad take
        assert _snapshot(extracted) == before_extracted
    assert not cache.exists() or not any(cache.iterdir())


def test_egoexo4d_needs_projectaria_tools_for_vrs(tmp_path, monkeypatch):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    monkeypatch.setitem(sys.modules, "projectaria_tools", None)  # not installed
    with pytest.raises(
        DataError,
        match=r"aria01_noimagestreams\.vrs: reading VRS needs Meta's "
        r"projectaria_tools",
    ):
        primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())


def test_egoexo4d_splits_and_missing_annotation_files(tmp_path, aria):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    val = primus_core.create("dataset", "egoexo4d", root=str(root), splits=["val"])
    assert len(val.load(IMUContract())) == 2
    # splits.json moves t-cook to val: it leaves the train windows, reported
    splits = json.loads((root / "annotations" / "splits.json").read_text())
    splits["take_uid_to_split"]["t-cook"] = "val"
    (root / "annotations" / "splits.json").write_text(json.dumps(splits))
    train = primus_core.create("dataset", "egoexo4d", root=str(root), splits=["train"])
    assert len(train.load(IMUContract())) == 6
    assert _report(train)["annotations/splits.json puts the take in another split than train"] == 2
    (root / "annotations" / "atomic_descriptions_train.json").unlink()
    assert len(primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())) == 2
    with pytest.raises(DataError, match=r"none of .*atomic_descriptions_train\.json exists"):
        train.load(IMUContract())


# ---------------------------------------------------------------------------------- Ego4D
def _ego4d_expected(passes=("narration_pass_1", "narration_pass_2")) -> list[float]:
    out = []
    for uid in sorted(trees.EGO4D_VIDEOS):
        scen, has_imu, csv, duration, p1, p2 = trees.EGO4D_VIDEOS[uid]
        if not csv or (isinstance(scen, list) and len(scen) > 1):
            continue
        times = (p1 if "narration_pass_1" in passes else []) + (
            p2 if "narration_pass_2" in passes else []
        )
        out += [_expected_centred(t, duration) for t in times]
    return out


@pytest.mark.parametrize("meta_at, inside", [("root", False), ("v2", False), ("root", True)])
def test_ego4d_official_tree(tmp_path, meta_at, inside):
    root = trees.make_ego4d(tmp_path / "ego4d", meta_at=meta_at)
    adapter = primus_core.create("dataset", "ego4d", root=str(root / "v2" if inside else root))
    ws = adapter.load(IMUContract())
    error = np.abs(starts_from_marker(ws) - np.array(_ego4d_expected()))
    print(f"ego4d worst placement error: {error.max() * 1000:.3f} ms")
    assert error.max() < ONE_SAMPLE
    assert [v["start_s"] for v in ws.videos] == pytest.approx(_ego4d_expected(), abs=1e-9)
    assert ws.videos[0]["path"].endswith("v2/full_scale/v-cook.mp4")
    assert ws.videos[-1]["path"] is None
    assert ws.narrations[0] == "opens the door 3"
    assert ws.class_names[ws.labels[0]] == "Cooking"
    assert ws.class_names[ws.labels[-1]] == "Walking on street"
    assert ws.subjects.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.isfinite(ws.imu).all() and np.abs(ws.imu[:, 2]).max() < 20  # empty cells -> 0
    report = {(r["reason"], r["kept"]): r["count"] for r in adapter.report.rows()}
    assert report[("video has several scenarios (multi_scenario: skip)", False)] == 1
    assert report[("has_imu but imu/<video_uid>.csv is missing", False)] == 2
    assert report[("video has no IMU (has_imu false)", False)] == 1
    assert report[("IMU rows with an empty canonical_timestamp_ms dropped", True)] > 0
    assert report[("IMU rows out of time order, sorted", True)] > 0
    assert report[("IMU rows with empty value cells, set to 0", True)] > 0


def test_ego4d_parameters(tmp_path):
    root = trees.make_ego4d(tmp_path / "ego4d")
    one = primus_core.create(
        "dataset",
        "ego4d",
        root=str(root),
        narration_passes=["narration_pass_1"],
        multi_scenario="first",
    )
    ws = one.load(IMUContract())
    assert len(ws) == 2 + 1 + 3
    assert ws.class_names[ws.labels[2]] == "Carpenter"  # v-multi labelled with its first
    ref = primus_core.create("dataset", "ego4d", root=str(root), windowing="reference")
    starts = starts_from_marker(ref.load(IMUContract()))
    assert np.abs(starts - np.array([0, 7, 15, 0, 4, 10])).max() < ONE_SAMPLE


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda lines: lines.__setitem__(30, lines[30][:12]),
            r"v-cook\.csv: line 31: expected 9 columns, got 4 \(truncated",
        ),
        (
            lambda lines: lines.__setitem__(40, lines[40].rsplit(",", 1)[0] + ",nan"),
            r"v-cook\.csv: line 41: non-finite value 'nan'",
        ),
        (
            lambda lines: lines.__setitem__(0, lines[0].replace("accl_z", "temperature")),
            r"v-cook\.csv: line 1: missing column\(s\) accl_z",
        ),
    ],
)
def test_ego4d_bad_variants(tmp_path, edit, message):
    root = trees.make_ego4d(tmp_path / "ego4d")
    csv = root / "v2" / "imu" / "v-cook.csv"
    lines = csv.read_text().splitlines()
    edit(lines)
    csv.write_text("\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    before = _snapshot(root)
    with pytest.raises(DataError, match=message):
        prepare({"type": "ego4d", "root": str(root)}, IMUContract(), cache, progress=False)
    assert _snapshot(root) == before and (not cache.exists() or not any(cache.iterdir()))


# ------------------------------------------------------------------------------ RealWorld
def test_realworld_official_archive(tmp_path):
    root = trees.make_realworld(tmp_path / "rw")
    adapter = primus_core.create("dataset", "realworld", root=str(root))
    ws = adapter.load(IMUContract())
    expected, subjects = [], []
    plan = [
        (1, "sitting", 1),
        (1, "walking", 1),
        (4, "climbingup", 1),
        (4, "climbingup", 2),
        (6, "sitting", 1),
    ]
    for proband, activity, session in plan:
        kind, seconds, acc_off, gyro_off = trees.REALWORLD[(proband, activity)]
        start = trees.realworld_start(proband, activity, session)
        span = seconds - abs(acc_off - gyro_off)
        n = int(span // 5) + (1 if span % 5 >= 2.5 else 0)
        expected += [start + 5 * k for k in range(n)]
        subjects += [proband] * n
    error = np.abs(starts_from_marker(ws) - np.array(expected))
    print(f"realworld worst placement error: {error.max() * 1000:.3f} ms")
    assert error.max() < ONE_SAMPLE
    assert ws.subjects.tolist() == subjects
    assert np.allclose(ws.imu[:, 2, :100], trees.G, atol=1e-4)
    report = _report(adapter)
    assert report == {
        "no member for this position": 1,
        "no gyroscope member": 1,
        "recording shorter than min_fill (0.5) of a window": 1,
    }


def test_realworld_bad_variants(tmp_path):
    root = trees.make_realworld(tmp_path / "rw")
    data = root / "realworld2016_dataset" / "proband1" / "data"
    text = trees.realworld_csv(16.0, 0.0, trees.RW_T0_MS, gyro=False).splitlines()
    text[20] = text[20].replace(text[20].split(",")[1], text[18].split(",")[1])
    with zipfile.ZipFile(data / "acc_walking_csv.zip", "w") as zf:
        zf.writestr("acc_walking_head.csv", "\n".join(text))
    with pytest.raises(
        DataError,
        match=r"acc_walking_head\.csv: non-monotonic \(goes back\) "
        r"timestamp at line 21 \(2015-06-22 19:06:40\.3\d\d UTC after "
        r"2015-06-22 19:06:40\.3\d\d UTC\)",
    ):
        primus_core.create("dataset", "realworld", root=str(root)).load(IMUContract())


def test_realworld_member_size_limit(tmp_path):
    """An 800 MB member is refused by name before it is inflated: memory stays flat."""
    import resource

    root = trees.make_realworld(tmp_path / "rw")
    primus_core.create("dataset", "realworld", root=str(root)).load(IMUContract())  # warm
    path = root / "realworld2016_dataset" / "proband1" / "data" / "acc_walking_csv.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("acc_walking_head.csv", "w", force_zip64=True) as fh:
            block = b"0" * (1 << 20)
            for _ in range(800):
                fh.write(block)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        DataError,
        match=r"acc_walking_csv\.zip:acc_walking_head\.csv: member "
        r"is 839 MB or more uncompressed, over the 256 MB limit",
    ):
        primus_core.create("dataset", "realworld", root=str(root)).load(IMUContract())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # KiB
    small = primus_core.create("dataset", "realworld", root=str(root), max_member_mb=0.01)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("acc_walking_head.csv", trees.realworld_csv(16.0, 0, trees.RW_T0_MS, False))
    with pytest.raises(
        DataError,
        match=r"acc_sitting_head\.csv: member is 0\.0\d+ MB or more uncompressed, over the 0\.01 MB "
        r"limit \(raise max_member_mb",
    ):
        small.load(IMUContract())


def test_realworld_prepare_strict(tmp_path, cli):
    root = trees.make_realworld(tmp_path / "rw")
    res = cli("data", "prepare", "realworld", "--root", root, "--cache-dir", tmp_path / "c")
    assert "skipped         1 recording: no gyroscope member" in res.out
    res = cli(
        "data",
        "prepare",
        "realworld",
        "--root",
        root,
        "--cache-dir",
        tmp_path / "c2",
        "--strict",
        expect=1,
    )
    assert res.err.count("\n") == 1 and "no member for this position" in res.err
    assert not any((tmp_path / "c2").iterdir())
    loaded = load_windows(
        {"type": "realworld", "root": str(root)}, IMUContract(), tmp_path / "c", progress=False
    )
    assert len(loaded) > 0


def test_egoexo4d_reference_bad_window_list_ships_with_primus(tmp_path, aria):
    """`bad_windows: reference` is the reference's 82-line list (75 distinct after repeats), and
    a window whose key is on it is left out and reported."""
    root = trees.make_egoexo4d(tmp_path / "ee")
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root), bad_windows="reference")
    listed = adapter.bad_windows()
    from primus_datasets.egocentric import REFERENCE_BAD_WINDOWS

    raw = REFERENCE_BAD_WINDOWS.read_text().split()
    assert len(raw) == 82 and len(listed) == len(set(raw))
    assert "e769336a-ac30-4eb4-9a47-607aff166242_1342_1347" in listed
    assert all(k.count("_") == 2 for k in listed)
    assert len(adapter.load(IMUContract()).imu) > 0  # the tree's takes are not on the list


def test_eval_reads_a_licence_gated_dataset_from_its_root(tmp_path, cli):
    """`primus eval --dataset realworld --root ROOT` evaluates on the local copy (the protocol
    and the dataset's parameters are in the report); without a root it is one error line."""
    root = trees.make_realworld(tmp_path / "rw")
    args = ["eval", "random:stacked-rnn", "--dataset", "realworld", "--shots", "1", "--seeds", "1"]
    args += ["--mode", "knn", "--no-baselines", "--no-progress", "--json", "--device", "cpu"]
    report = json.loads(cli(*args, "--root", root, "--set", "min_fill=0.5").out)
    assert report["settings"]["dataset_params"] == {"root": str(root), "min_fill": 0.5}
    assert report["settings"]["dataset"] == "realworld"
    line = cli(*args, expect=1).err.strip().splitlines()[-1]
    assert line.startswith("error:") and "root" in line
