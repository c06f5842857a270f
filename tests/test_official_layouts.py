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
import torch

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
    assert error.max() < 1e-5  # docs/datasets.md: 0.001 ms measured
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
    assert error.max() < 2e-4  # docs/datasets.md: 0.08 ms measured
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
    assert error.max() < 1e-3  # docs/datasets.md: 0.6 ms measured (clock jitter)
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


# --------------------------------------------------------- EgoExo4D: sources, cuts, skips
def _windows_of(ws, uid_folder: str) -> np.ndarray:
    """Indices of the windows whose ego video lies in the take folder ``uid_folder``."""
    return np.array([i for i, v in enumerate(ws.videos) if f"/{uid_folder}/" in (v["path"] or "")])


def test_egoexo4d_imu_sources_in_order_per_take_file_then_pkl_then_vrs(tmp_path, aria, primus_home):
    """A take with several IMU sources reads the per-take file (csv or npz) before
    processed_imu.pkl, and processed_imu.pkl before the VRS; acc_y tells the sources apart."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    user = root / "primus_imu"
    trees.write_egoexo_user_imu(user, "t-bike", -0.2, 30.3, fmt="npz", acc_y=1.0, rate=200.0)
    trees.write_egoexo_user_imu(user, "t-dance", 0.0, 20.0, fmt="csv", acc_y=3.0, rate=200.0)
    (root / "takes" / "upenn_cooking_3" / "processed_imu.pkl").write_bytes(
        trees.egoexo_pkl_bytes("t-cook", acc_y=2.0)
    )
    extracted = primus_home / "extracted" / "egoexo4d"
    before = sorted(extracted.glob("t-cook-*.npz")) if extracted.exists() else []
    ws = primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    acc_y = {
        folder: ws.imu[_windows_of(ws, folder), 1]
        for folder in ("cmu_bike01_2", "upenn_cooking_3", "uniandes_dance_4", "unc_covid_1")
    }
    assert np.allclose(acc_y["cmu_bike01_2"], 1.0, atol=1e-5)  # npz over processed_imu.pkl
    assert np.allclose(acc_y["uniandes_dance_4"], 3.0, atol=1e-5)  # csv over processed_imu.pkl
    assert np.allclose(acc_y["upenn_cooking_3"], 2.0, atol=1e-5)  # pkl over the VRS
    assert np.allclose(acc_y["unc_covid_1"][:, :150], 0.0)  # its only source: the csv
    now = sorted(extracted.glob("t-cook-*.npz")) if extracted.exists() else []
    assert now == before  # the VRS was never read
    # every source on the take timeline: the windows start where the rules put them
    expected = []
    for uid in ("t-bike", "t-cook", "t-covid", "t-dance"):
        duration = trees.EGOEXO_TAKES[uid][2]
        times = [t for rejected, ts in trees.EGOEXO_DESCRIPTIONS[uid] if not rejected for t in ts]
        expected += [_expected_centred(t, duration) for t in times]
    assert np.abs(starts_from_marker(ws) - np.array(expected)).max() < ONE_SAMPLE


def test_egoexo4d_malicious_processed_imu_pkl_is_refused_and_runs_nothing(tmp_path, aria):
    """processed_imu.pkl goes through the restricted unpickler: a pickle that would run code
    (each would create the marker file) is one DataError naming the file."""
    from test_guard_pickle import payloads

    root = trees.make_egoexo4d(tmp_path / "egoexo")
    pkl = root / "takes" / "cmu_bike01_2" / "processed_imu.pkl"
    marker = tmp_path / "pwned"
    for name, blob in payloads(marker).items():
        pkl.write_bytes(blob)
        adapter = primus_core.create("dataset", "egoexo4d", root=str(root))
        with pytest.raises(DataError, match=r"processed_imu\.pkl") as info:
            adapter.load(IMUContract())
        assert "refusing to load" in str(info.value) and "\n" not in str(info.value), name
        assert not marker.exists() and not (tmp_path / "pwned.npy").exists(), name


def test_egoexo4d_imu_before_the_take_start_and_after_duration_sec_is_cut_off(tmp_path, aria):
    """The 3 s take t-covid with IMU from -1 s to 5 s: its one window starts at take time 0 and
    holds IMU only up to 3 s (sample 150 at 50 Hz); samples 151.. are zero, not the IMU past
    the take's end."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    trees.write_egoexo_user_imu(root / "primus_imu", "t-covid", -1.0, 5.0, rate=200.0)
    ws = primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    (covid,) = _windows_of(ws, "unc_covid_1")
    window = ws.imu[covid]
    assert window[5, 0] / trees.MARK == pytest.approx(0.0, abs=1e-3)  # starts at the take start
    assert window[5, 150] / trees.MARK == pytest.approx(3.0, abs=1e-3)  # last sample: 3.0 s
    assert window[2, 150] == pytest.approx(trees.G)
    assert not window[:, 151:].any()  # after duration_sec: zero padding, not the IMU


def test_egoexo4d_timesync_start_row_past_the_end_of_the_file_is_an_error(tmp_path, aria):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    sync = root / "captures" / "cmu_bike01" / "timesync.csv"
    lines = sync.read_text().splitlines()
    sync.write_text("\n".join(lines[:5]) + "\n")  # header + data rows 0..3; t-bike needs row 4
    with pytest.raises(
        DataError,
        match=r"timesync\.csv: take t-bike: timesync_start_idx \+ 1 = 4 is past the last row "
        r"\(3\)",
    ) as info:
        primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    assert "\n" not in str(info.value)


def test_egoexo4d_reference_windowing_needs_whole_second_windows(tmp_path, aria):
    """240 samples at 50 Hz is 4.8 s: `windowing: reference` is one clear error, not windows
    silently floored to another length."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root), windowing="reference")
    with pytest.raises(DataError, match=r"needs whole-second windows.*lasts 4\.8 s") as info:
        adapter.load(IMUContract(window_samples=240))
    assert "\n" not in str(info.value)
    assert len(adapter.load(IMUContract(window_samples=200))) > 0  # 4 s: whole seconds


def test_egoexo4d_window_the_imu_covers_less_than_min_fill_of_is_skipped(tmp_path, aria):
    """t-bike's IMU ends at 10.0 s: the window [7.5, 12.5] holds 126 of 250 samples (0.504,
    kept, zero after sample 125); those at 12.8, 18.0 and 25.0 s hold none (skipped)."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    trees.write_egoexo_user_imu(root / "primus_imu", "t-bike", 0.0, 10.0, rate=200.0)
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root))
    ws = adapter.load(IMUContract())
    bike = _windows_of(ws, "cmu_bike01_2")
    assert [ws.videos[i]["start_s"] for i in bike] == [0.0, 7.5]
    partial = ws.imu[bike[1]]
    assert partial[5, 125] / trees.MARK == pytest.approx(10.0, abs=1e-3)
    assert not partial[:, 126:].any()
    assert _report(adapter)["IMU covers less than min_fill (0.5) of the window"] == 3
    stricter = primus_core.create("dataset", "egoexo4d", root=str(root), min_fill=0.6)
    assert len(stricter.load(IMUContract())) == len(ws) - 1  # 0.504 < 0.6: skipped too
    assert _report(stricter)["IMU covers less than min_fill (0.6) of the window"] == 4


def _set_first_annotator_rejected(root: Path, uid: str) -> None:
    path = root / "annotations" / "atomic_descriptions_train.json"
    doc = json.loads(path.read_text())
    doc["annotations"][uid][0]["rejected"] = True
    path.write_text(json.dumps(doc))


def test_egoexo4d_include_rejected_keeps_a_rejected_first_annotation(tmp_path, aria):
    """t-bike's first annotation (1.0, 10.0, 29.0, 15.3 s) marked rejected: with
    `annotators: first` it is left out and reported unless `include_rejected: true` (the
    reference's behaviour), which keeps its 4 windows and reports nothing rejected."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    _set_first_annotator_rejected(root, "t-bike")
    kept = primus_core.create(
        "dataset", "egoexo4d", root=str(root), annotators="first", include_rejected=True
    )
    ws = kept.load(IMUContract())
    bike = _windows_of(ws, "cmu_bike01_2")
    expected = [_expected_centred(t, 30.0) for t in (1.0, 10.0, 29.0, 15.3)]
    assert [ws.videos[i]["start_s"] for i in bike] == pytest.approx(expected)
    assert "annotation marked rejected" not in _report(kept)
    left = primus_core.create("dataset", "egoexo4d", root=str(root), annotators="first")
    ws = left.load(IMUContract())
    assert len(_windows_of(ws, "cmu_bike01_2")) == 0
    assert _report(left)["annotation marked rejected"] == 4
    # annotators: all with include_rejected: t-bike's rejected second annotator (12.0 s) too
    every = primus_core.create(
        "dataset",
        "egoexo4d",
        root=str(trees.make_egoexo4d(tmp_path / "egoexo2")),
        include_rejected=True,
    )
    ws = every.load(IMUContract())
    bike = _windows_of(ws, "cmu_bike01_2")
    assert sorted(ws.videos[i]["start_s"] for i in bike) == pytest.approx(
        sorted(_expected_centred(t, 30.0) for t in (1.0, 10.0, 29.0, 15.3, 12.0, 20.5))
    )
    assert "annotation marked rejected" not in _report(every)


def test_egoexo4d_annotators_not_chosen_by_first_are_not_a_skip(tmp_path, aria):
    """t-bike's second and third annotators are left out by `annotators: first` without a
    report row (the report is exactly the tree's two real skips), so `--strict` does not
    refuse a choice."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    adapter = primus_core.create(
        "dataset", "egoexo4d", root=str(root), annotators="first", include_rejected=True
    )
    ws = adapter.load(IMUContract())
    assert len(_windows_of(ws, "cmu_bike01_2")) == 4
    assert _report(adapter) == {
        "take has no IMU (no per-take file, processed_imu.pkl or VRS)": 1,
        "take not in takes.json": 1,
    }


def test_egoexo4d_bad_windows_json_list_leaves_out_centred_windows_by_floored_ends(tmp_path, aria):
    """A JSON list of keys: t-bike's 15.3 s window [12.8, 17.8] is `t-bike_12_17` and t-dance's
    4.9 s window [2.4, 7.4] is `t-dance_2_7`; unfloored or rounded keys match nothing."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["t-bike_12_17", "t-dance_2_7", "t-bike_13_18", "t-bike_7.5_12.5"]))
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root), bad_windows=str(bad))
    ws = adapter.load(IMUContract())
    starts = {
        folder: [ws.videos[i]["start_s"] for i in _windows_of(ws, folder)]
        for folder in ("cmu_bike01_2", "uniandes_dance_4")
    }
    assert starts["cmu_bike01_2"] == pytest.approx([0.0, 7.5, 25.0, 18.0])  # 12.8 left out
    assert starts["uniandes_dance_4"] == pytest.approx([15.0])  # 2.4 left out
    assert _report(adapter)["listed in bad_windows"] == 2


# ------------------------------------------------------------------- RealWorld: more skips
def test_realworld_skips_missing_gyro_archive_missing_acc_member_and_no_overlap(tmp_path):
    """Three more archive defects, each reported once by its reason: proband 1's walking
    without gyr_walking_csv.zip, proband 4's second climbing session without its accelerometer
    inner zip, proband 1's sitting gyroscope recorded 100 s after its accelerometer."""
    root = trees.make_realworld(tmp_path / "rw")
    data = root / "realworld2016_dataset"
    (data / "proband1" / "data" / "gyr_walking_csv.zip").unlink()
    trees.rewrite_zip(
        data / "proband4" / "data" / "acc_climbingup_csv.zip", drop=("acc_climbingup_2_csv.zip",)
    )
    base = trees.RW_T0_MS + 1 * 3_600_000
    trees.rewrite_zip(
        data / "proband1" / "data" / "gyr_sitting_csv.zip",
        put={"Gyroscope_sitting_head.csv": trees.realworld_csv(7.0, 100.0, base, gyro=True)},
    )
    adapter = primus_core.create("dataset", "realworld", root=str(root))
    ws = adapter.load(IMUContract())
    assert _report(adapter) == {
        "gyroscope archive missing": 1,
        "no accelerometer member": 1,
        "accelerometer and gyroscope do not overlap in time": 1,
        "no member for this position": 1,  # the tree's own three
        "no gyroscope member": 1,
        "recording shorter than min_fill (0.5) of a window": 1,
    }
    # what is left: proband 4's first session (2 windows) and proband 6's sitting (2)
    expected = [trees.realworld_start(4, "climbingup", 1) + 5 * k for k in range(2)]
    expected += [trees.realworld_start(6, "sitting", 1) + 5 * k for k in range(2)]
    assert ws.subjects.tolist() == [4, 4, 6, 6]
    assert np.abs(starts_from_marker(ws) - np.array(expected)).max() < ONE_SAMPLE


# ------------------------------------------------------------- Ego4D: layouts, repairs, skips
def test_ego4d_v1_layout(tmp_path):
    """The download's version folder named v1/ (ego4d.json at ROOT): the same windows, and the
    canonical video found under v1/full_scale; root may also be v1/ itself."""
    root = trees.make_ego4d(tmp_path / "ego4d")
    (root / "v2").rename(root / "v1")
    for where in (root, root / "v1"):
        ws = primus_core.create("dataset", "ego4d", root=str(where)).load(IMUContract())
        assert np.abs(starts_from_marker(ws) - np.array(_ego4d_expected())).max() < ONE_SAMPLE
        assert ws.videos[0]["path"].endswith("v1/full_scale/v-cook.mp4")


def test_ego4d_rows_repeating_a_canonical_time_are_dropped(tmp_path):
    """A row repeating the canonical time of the row before it (gyro 999) is dropped and
    reported as a repair; the windows stay where the rules put them and never hold 999."""
    root = trees.make_ego4d(tmp_path / "ego4d")
    csv = root / "v2" / "imu" / "v-cook.csv"
    lines = csv.read_text().splitlines()
    original = lines[521].split(",")  # t = -0.5 + 520 x 4.975 ms = 2.087 s: in window 1
    repeat = original[:3] + ["999", "999", "999"] + original[6:]
    lines.insert(522, ",".join(repeat))
    csv.write_text("\n".join(lines) + "\n")
    adapter = primus_core.create("dataset", "ego4d", root=str(root))
    ws = adapter.load(IMUContract())
    report = {(r["reason"], r["kept"]): r["count"] for r in adapter.report.rows()}
    assert report[("IMU rows repeating a canonical time dropped", True)] == 1
    assert np.abs(ws.imu[:, 3:]).max() < 1.0
    assert np.abs(starts_from_marker(ws) - np.array(_ego4d_expected())).max() < ONE_SAMPLE


def test_ego4d_missing_imu_error_names_the_missing_csv(tmp_path):
    root = trees.make_ego4d(tmp_path / "ego4d")
    adapter = primus_core.create("dataset", "ego4d", root=str(root), missing_imu="error")
    with pytest.raises(
        DataError, match=r"v2/imu/v-lost\.csv is missing \(video v-lost has_imu\)"
    ) as info:
        adapter.load(IMUContract())
    assert "\n" not in str(info.value)
    (root / "v2" / "imu" / "v-lost.csv").write_text(trees._ego4d_csv(12.0))
    ws = adapter.load(IMUContract())  # v-noimu (has_imu false) stays a skip, not an error
    assert len(ws) == len(_ego4d_expected()) + 2


def test_ego4d_skips_unknown_video_no_overlap_and_narration_without_timestamp(tmp_path):
    """A narrated video missing from ego4d.json (2 narrations), v-cook's IMU shifted 100 s
    past its 20 s video (3 narrations), one of v-walk's narrations with a null timestamp_sec:
    each reported with its count, v-walk's other two windows kept."""
    root = trees.make_ego4d(tmp_path / "ego4d")
    path = root / "v2" / "annotations" / "narration.json"
    narrations = json.loads(path.read_text())
    narrations["v-ghost"] = narrations["v-lost"]
    narrations["v-walk"]["narration_pass_1"]["narrations"][1]["timestamp_sec"] = None
    path.write_text(json.dumps(narrations))
    csv = root / "v2" / "imu" / "v-cook.csv"
    lines = csv.read_text().splitlines()
    for i in range(1, len(lines)):
        cells = lines[i].split(",")
        if cells[2]:
            cells[2] = f"{float(cells[2]) + 100_000:.3f}"
        lines[i] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    adapter = primus_core.create("dataset", "ego4d", root=str(root))
    ws = adapter.load(IMUContract())
    report = _report(adapter)
    assert report["video not in ego4d.json"] == 2
    assert report["IMU does not overlap the video"] == 3
    assert report["narration without a numeric timestamp_sec"] == 1
    expected = [_expected_centred(t, 15.0) for t in (1.0, 14.0)]
    assert np.abs(starts_from_marker(ws) - np.array(expected)).max() < ONE_SAMPLE


# ------------------------------------------------------------------------ cache and script
def test_prepare_force_rebuilds_a_cache_and_labels_subjects_are_int64(tmp_path, cli):
    """`data prepare --force` writes the cache again (a damaged one, its subjects.npy deleted
    and a stray file added, is replaced whole), where a plain prepare keeps what is there; the
    cache's labels.npy and subjects.npy are int64, imu.npy float32. Windows per recording as
    in test_realworld_official_archive: 1 + 3 (proband 1), 2 + 2 (proband 4), 2 (proband 6)."""
    root = trees.make_realworld(tmp_path / "rw")
    args = ["data", "prepare", "realworld", "--root", root, "--cache-dir", tmp_path / "c"]
    folder = Path(json.loads(cli(*args, "--json").out)["folder"])
    assert np.load(folder / "labels.npy").dtype == np.int64
    assert np.load(folder / "subjects.npy").dtype == np.int64
    assert np.load(folder / "imu.npy").dtype == np.float32
    assert np.load(folder / "subjects.npy").tolist() == [1, 1, 1, 1, 4, 4, 4, 4, 6, 6]
    (folder / "subjects.npy").unlink()
    (folder / "stray.txt").write_text("left by hand")
    assert "already prepared" in cli(*args).out
    assert not (folder / "subjects.npy").exists()  # without --force: kept as it is
    out = json.loads(cli(*args, "--force", "--json").out)
    assert Path(out["folder"]) == folder and out["windows"] == 10
    assert not (folder / "stray.txt").exists()
    assert np.load(folder / "subjects.npy").tolist() == [1, 1, 1, 1, 4, 4, 4, 4, 6, 6]
    ws = load_windows(
        {"type": "realworld", "root": str(root)}, IMUContract(), tmp_path / "c", progress=False
    )  # sizes and checksums verified
    assert ws.labels.dtype == np.int64 and ws.subjects.dtype == np.int64


def test_official_trees_script_writes_the_three_trees(tmp_path):
    """`python tests/official_trees.py OUT` writes the EgoExo4D, Ego4D and RealWorld trees in
    their download layouts under OUT."""
    import subprocess

    out = tmp_path / "trees"
    script = Path(__file__).parent / "official_trees.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    takes = json.loads((out / "egoexo4d" / "takes.json").read_text())
    assert sorted(t["take_uid"] for t in takes) == sorted(trees.EGOEXO_TAKES)
    for split in ("train", "val"):
        assert (out / "egoexo4d" / "annotations" / f"atomic_descriptions_{split}.json").is_file()
    assert (out / "egoexo4d" / "captures" / "cmu_bike01" / "timesync.csv").is_file()
    assert (out / "egoexo4d" / "takes" / "cmu_bike01_2" / "processed_imu.pkl").is_file()
    assert (out / "ego4d" / "ego4d.json").is_file()
    assert (out / "ego4d" / "v2" / "annotations" / "narration.json").is_file()
    assert sorted(p.name for p in (out / "ego4d" / "v2" / "imu").iterdir()) == [
        "v-cook.csv",
        "v-multi.csv",
        "v-walk.csv",
    ]
    rw = out / "realworld" / "realworld2016_dataset"
    assert sorted(p.name for p in rw.iterdir()) == [f"proband{n}" for n in (1, 2, 3, 4, 6)]
    assert (rw / "proband1" / "data" / "acc_walking_csv.zip").is_file()
    assert (rw / "proband1" / "data" / "gyr_walking_csv.zip").is_file()
    # and the adapters read them
    assert (
        len(
            primus_core.create("dataset", "realworld", root=str(out / "realworld")).load(
                IMUContract()
            )
        )
        == 10
    )  # 1 + 3 (proband 1), 2 + 2 (proband 4's sessions), 2 (proband 6)


def test_trainer_validates_on_data_validation_the_official_val_split(tmp_path, aria):
    """A recipe with `data.validation: [{egoexo4d, splits: [val]}]` trains on every train-split
    window (8: t-bike 5, t-cook 2, t-covid 1; none held out by val_fraction) and validates on
    the val split's windows: t-dance's two, at 2.4 s and 15.0 s of its take."""
    from primus_core.data.shard import Ranks
    from primus_core.registry.recipes import resolve_recipe
    from primus_core.training.trainer import build_run

    root = trees.make_egoexo4d(tmp_path / "egoexo")
    recipe = tmp_path / "val-split.yaml"
    recipe.write_text(
        "extends: simclr-hapt\n"  # no teacher model to load
        "data:\n"
        f"  pretrain: [{{type: egoexo4d, root: '{root}', splits: [train]}}]\n"
        "  validation: [{type: egoexo4d, splits: [val]}]\n"
        "  val_fraction: 0.5\n"
    )
    tiny = ["encoder.hidden_size=16", "train.batch_size=4"]
    loaded = resolve_recipe(recipe, tiny)
    assert loaded.recipe.data.validation[0].params["root"] == str(root)
    (tmp_path / "run").mkdir()
    run = build_run(loaded, tmp_path / "run", torch.device("cpu"), Ranks(), progress=False)
    assert run.windows == 8 and len(run.train_source) == 8
    assert len(run.val_source) == 2
    val_starts = run.val_source.imu[:, 5, 0].numpy().astype(np.float64) / trees.MARK
    assert np.abs(val_starts - np.array([2.4, 15.0])).max() < ONE_SAMPLE
    train_starts = run.train_source.imu[:, 5, 0].numpy().astype(np.float64) / trees.MARK
    assert not np.isin(np.round(train_starts, 2), [2.4, 15.0]).any()


def test_egoexo4d_skips_excluded_takes_descriptions_no_timestamp_and_no_overlap(tmp_path, aria):
    """Each reported with its count in windows: `exclude` t-covid (1 description) and
    t-bike@10 (1), t-bike's 15.3 s description with a null timestamp (1), t-cook's IMU only
    from 50 s to 60 s of its 12 s take (2)."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    path = root / "annotations" / "atomic_descriptions_train.json"
    doc = json.loads(path.read_text())
    doc["annotations"]["t-bike"][0]["descriptions"][3]["timestamp"] = None
    path.write_text(json.dumps(doc))
    trees.write_egoexo_user_imu(root / "primus_imu", "t-cook", 50.0, 60.0, rate=200.0)
    adapter = primus_core.create(
        "dataset", "egoexo4d", root=str(root), exclude=["t-covid", "t-bike@10"]
    )
    ws = adapter.load(IMUContract())
    report = _report(adapter)
    assert report["take listed in exclude"] == 1
    assert report["description listed in exclude"] == 1
    assert report["description without a numeric timestamp"] == 1
    assert report["IMU does not overlap the take"] == 2
    bike = [ws.videos[i]["start_s"] for i in _windows_of(ws, "cmu_bike01_2")]
    assert bike == pytest.approx([_expected_centred(t, 30.0) for t in (1.0, 29.0, 20.5)])
    assert len(_windows_of(ws, "unc_covid_1")) == 0 and len(_windows_of(ws, "upenn_cooking_3")) == 0


def _no_ego_camera(root: Path) -> None:
    takes = json.loads((root / "takes.json").read_text())
    for take in takes:
        if take["take_uid"] == "t-dance":
            for cam in take["capture"]["cameras"]:
                cam["is_ego"] = False
    (root / "takes.json").write_text(json.dumps(takes))


def _no_start_idx(root: Path) -> None:
    takes = json.loads((root / "takes.json").read_text())
    for take in takes:
        if take["take_uid"] == "t-dance":
            del take["timesync_start_idx"]
    (root / "takes.json").write_text(json.dumps(takes))


@pytest.mark.parametrize(
    "edit, why",
    [
        (_no_ego_camera, "no ego Aria camera in takes.json"),
        (_no_start_idx, "no timesync_start_idx in takes.json"),
        (
            lambda root: (root / "captures" / "uniandes_dance" / "timesync.csv").unlink(),
            "captures/<capture>/timesync.csv missing (egoexo --parts captures)",
        ),
    ],
)
def test_egoexo4d_take_start_unknown_is_a_reported_skip(tmp_path, aria, edit, why):
    """t-dance (two descriptions, IMU in processed_imu.pkl on the device clock) without a way
    to find its start on that clock: its 2 windows are skipped with the reason, the others
    kept. Without camera metadata its folder holds two Aria videos, so no ego camera either."""
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    edit(root)
    adapter = primus_core.create("dataset", "egoexo4d", root=str(root))
    ws = adapter.load(IMUContract())
    assert _report(adapter)[f"take start on the device clock unknown: {why}"] == 2
    assert len(_windows_of(ws, "uniandes_dance_4")) == 0 and len(ws) == 8


def test_egoexo4d_video_full_picks_the_full_size_ego_video(tmp_path, aria):
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    ws = primus_core.create("dataset", "egoexo4d", root=str(root), video="full").load(IMUContract())
    paths = [v["path"] for v in ws.videos]
    assert paths[0].endswith("takes/cmu_bike01_2/frame_aligned_videos/aria06_214-1.mp4")
    assert not any("downscaled" in p for p in paths)


def test_ego4d_cleaning_and_bad_windows_keyed_by_video_uid(tmp_path):
    """`cleaning: reference` drops every capital C ("#C C Cuts the Carrot, #unsure!" ->
    "uts the arrot, something"), the default keeps them as lowercase; `bad_windows` keys are
    `<video_uid>_<start>_<end>` with floored ends: v-walk's 7.25 s window [4.76, 9.76] (on the 50 Hz
    grid) is `v-walk_4_9`."""
    root = trees.make_ego4d(tmp_path / "ego4d")
    path = root / "v2" / "annotations" / "narration.json"
    narrations = json.loads(path.read_text())
    narrations["v-cook"]["narration_pass_1"]["narrations"][0]["narration_text"] = (
        "#C C Cuts the Carrot, #unsure!"
    )
    path.write_text(json.dumps(narrations))
    bad = tmp_path / "bad.txt"
    bad.write_text("v-walk_4_9\nv-walk_5_10\n")
    ref = primus_core.create(
        "dataset", "ego4d", root=str(root), cleaning="reference", bad_windows=str(bad)
    )
    ws = ref.load(IMUContract())
    assert ws.narrations[0] == "uts the arrot, something"
    assert _report(ref)["listed in bad_windows"] == 1
    expected = [e for e in _ego4d_expected() if abs(e - 4.76) > 1e-9]
    assert np.abs(starts_from_marker(ws) - np.array(expected)).max() < ONE_SAMPLE
    default = primus_core.create("dataset", "ego4d", root=str(root)).load(IMUContract())
    assert default.narrations[0] == "cuts the carrot something"


def test_ego4d_windows_clamped_to_video_duration_sec_else_duration_sec(tmp_path):
    """v-cook's 18.5 s narration: with video_metadata.video_duration_sec 16 (duration_sec 20)
    the window is clamped to start at 16 - 5 = 11.0; without video_duration_sec, by
    duration_sec (set to 20.4): 15.4."""
    root = trees.make_ego4d(tmp_path / "ego4d")
    meta = json.loads((root / "ego4d.json").read_text())
    cook = next(v for v in meta["videos"] if v["video_uid"] == "v-cook")
    cook["video_metadata"]["video_duration_sec"] = 16.0
    (root / "ego4d.json").write_text(json.dumps(meta))
    ws = primus_core.create("dataset", "ego4d", root=str(root)).load(IMUContract())
    assert starts_from_marker(ws)[:3] == pytest.approx([0.5, 7.5, 11.0], abs=ONE_SAMPLE)
    del cook["video_metadata"]["video_duration_sec"]
    cook["duration_sec"] = 20.4
    (root / "ego4d.json").write_text(json.dumps(meta))
    ws = primus_core.create("dataset", "ego4d", root=str(root)).load(IMUContract())
    assert starts_from_marker(ws)[:3] == pytest.approx([0.5, 7.5, 15.4], abs=ONE_SAMPLE)


def test_ego4d_scenarios_fix_the_classes_in_their_order(tmp_path):
    """`scenarios: [Walking on street, Cooking]` is the class list in that order (not every
    scenario of ego4d.json, sorted); a video of a scenario not listed keeps its windows,
    unlabelled (-1)."""
    root = trees.make_ego4d(tmp_path / "ego4d")
    two = primus_core.create(
        "dataset", "ego4d", root=str(root), scenarios=["Walking on street", "Cooking"]
    )
    ws = two.load(IMUContract())
    assert ws.class_names == ["Walking on street", "Cooking"]
    assert ws.labels.tolist() == [1, 1, 1, 0, 0, 0]  # v-cook, then v-walk
    one = primus_core.create("dataset", "ego4d", root=str(root), scenarios=["Walking on street"])
    ws = one.load(IMUContract())
    assert ws.class_names == ["Walking on street"]
    assert ws.labels.tolist() == [-1, -1, -1, 0, 0, 0]


# ------------------------------------------------------- VRS extraction and the cache key
def test_egoexo4d_vrs_imu_is_extracted_once_and_again_after_the_vrs_changes(tmp_path, monkeypatch):
    """The stand-in counts the VRS files it opens: two loads open t-cook's VRS once (the second
    reads $PRIMUS_HOME/extracted/egoexo4d/t-cook-<key>.npz); a new mtime is a new key, one more
    extraction; no temporary file is left beside the npz files."""
    home = tmp_path / "home"
    monkeypatch.setenv("PRIMUS_HOME", str(home))
    modules = trees.fake_projectaria_tools()
    provider = modules["projectaria_tools.core.data_provider"]
    opened = []
    real = provider.create_vrs_data_provider

    def counting(path):
        opened.append(Path(path).name)
        return real(path)

    provider.create_vrs_data_provider = counting
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    root = trees.make_egoexo4d(tmp_path / "egoexo")
    first = primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    again = primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    assert opened == ["aria01_noimagestreams.vrs"]
    assert np.array_equal(first.imu, again.imu)
    extracted = home / "extracted" / "egoexo4d"
    assert [p.name[:7] for p in extracted.iterdir()] == ["t-cook-"]
    vrs = root / "takes" / "upenn_cooking_3" / "aria01_noimagestreams.vrs"
    os.utime(vrs, ns=(vrs.stat().st_atime_ns, vrs.stat().st_mtime_ns + 10**9))
    primus_core.create("dataset", "egoexo4d", root=str(root)).load(IMUContract())
    assert opened == ["aria01_noimagestreams.vrs"] * 2
    names = sorted(p.name for p in extracted.iterdir())
    assert len(names) == 2 and all(n.startswith("t-cook-") and n.endswith(".npz") for n in names)


def test_cache_key_changes_with_contract_version_file_size_and_file_name(tmp_path, monkeypatch):
    """The cache folder is `<name>-<key>`; the key changes with the contract, the adapter
    version, a source file's size (mtime kept) and a source file's name (size and mtime
    kept), and stays the same when nothing changed."""
    root = trees.make_realworld(tmp_path / "rw")
    ref = {"type": "realworld", "root": str(root)}
    cache = tmp_path / "cache"

    def key(contract=IMUContract()):
        folder = cache_path(create_adapter(ref), contract, cache)
        assert folder.parent == cache and folder.name.startswith("realworld-")
        return folder.name

    base = key()
    assert key() == base
    assert key(IMUContract(window_samples=200)) != base
    from primus_datasets.realworld import RealWorld

    monkeypatch.setattr(RealWorld, "version", RealWorld.version + "-next")
    assert key() != base
    monkeypatch.undo()
    assert key() == base
    data = root / "realworld2016_dataset" / "proband3" / "data"
    archive = data / "acc_running_csv.zip"
    stat = archive.stat()
    trees.rewrite_zip(archive, put={"readMe2": "x" * 100})
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert archive.stat().st_size != stat.st_size
    resized = key()
    assert resized != base
    stats = {p: p.stat() for p in data.iterdir()}
    (data.parent).rename(data.parent.with_name("proband5"))
    for p, st in stats.items():
        moved = root / "realworld2016_dataset" / "proband5" / "data" / p.name
        os.utime(moved, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key() not in (base, resized)


def test_prepare_without_cache_dir_writes_under_primus_home_data(tmp_path, cli, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("PRIMUS_HOME", str(home))
    root = trees.make_realworld(tmp_path / "rw")
    out = json.loads(cli("data", "prepare", "realworld", "--root", root, "--json").out)
    folder = Path(out["folder"])
    assert folder.parent == home / "data" and folder.name.startswith("realworld-")
    assert (folder / "imu.npy").is_file() and (folder / "meta.json").is_file()


def test_corrupt_cache_error_advises_to_prepare_again_and_verify_false_skips_hashing(tmp_path):
    """A flipped byte in imu.npy: one error naming the file and telling to delete the folder
    and prepare again; `verify=False` skips the hashing, so the same cache opens (sizes are
    still checked) and shows the flipped value."""
    root = trees.make_realworld(tmp_path / "rw")
    ref = {"type": "realworld", "root": str(root)}
    cache = tmp_path / "cache"
    folder = prepare(ref, IMUContract(), cache, progress=False)
    data = bytearray((folder / "imu.npy").read_bytes())
    data[-1] ^= 0x01
    (folder / "imu.npy").write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        load_windows(ref, IMUContract(), cache, progress=False)
    assert str(info.value) == (
        f"prepared cache {folder} is corrupt: imu.npy fails its sha256 checksum; delete "
        f"{folder} and run `primus data prepare realworld` again"
    )
    ws = load_windows(ref, IMUContract(), cache, progress=False, verify=False)
    assert len(ws) == 10
    (folder / "labels.npy").write_bytes(b"")
    with pytest.raises(DataError, match=r"labels\.npy has 0 bytes, expected \d+; delete"):
        load_windows(ref, IMUContract(), cache, progress=False, verify=False)


def test_cache_takes_about_60_5_mb_per_10000_windows(tmp_path):
    """docs/datasets.md: about 60.5 MB per 10,000 windows at the default contract, i.e. 6,050
    bytes a window: 6 x 250 float32 (6,000) + label and subject int64 (16) + its narration;
    the fixed part (npy headers, meta.json) left out."""
    root = trees.make_realworld(tmp_path / "rw")
    folder = prepare(
        {"type": "realworld", "root": str(root)}, IMUContract(), tmp_path / "c", progress=False
    )
    n = len(np.load(folder / "labels.npy"))
    per_window = 0.0
    for name in ("imu.npy", "labels.npy", "subjects.npy"):
        with open(folder / name, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else (np.lib.format.read_array_header_2_0)
            )
            read(fh)
            header = fh.tell()
        per_window += ((folder / name).stat().st_size - header) / n
    per_window += (folder / "narrations.json").stat().st_size / n
    print(f"cache bytes per window: {per_window:.1f}")
    assert per_window == pytest.approx(6050, rel=0.02)


def test_prepare_rate_hz_and_window_samples_choose_another_contract(tmp_path, cli):
    """`--rate-hz 200 --window-samples 1000` (IMU2CLIP's contract): windows of (6, 1000), still
    5 s each, so the same 10 RealWorld windows over the same spans (a recording's length
    compared with min_fill of a window at the same rate: the 7 s and 10 s ones are kept)."""
    root = trees.make_realworld(tmp_path / "rw")
    args = ["data", "prepare", "realworld", "--root", root, "--cache-dir", tmp_path / "c"]
    out = json.loads(cli(*args, "--rate-hz", "200", "--window-samples", "1000", "--json").out)
    imu = np.load(Path(out["folder"]) / "imu.npy")
    assert imu.shape == (10, 6, 1000) and imu.dtype == np.float32
    default = json.loads(cli(*args, "--json").out)
    base = np.load(Path(default["folder"]) / "imu.npy")
    assert base.shape == (10, 6, 250)
    # the same spans: the marker's mean over a window is its middle (2.4975 s / 2.49 s in)
    middle_200 = imu[:, 5].astype(np.float64).mean(axis=1) / trees.MARK - 999 / 2 / 200
    middle_50 = base[:, 5].astype(np.float64).mean(axis=1) / trees.MARK - 249 / 2 / 50
    assert np.abs(middle_200 - middle_50).max() < ONE_SAMPLE
    assert np.allclose(imu[:, :3, ::4], base[:, :3], atol=0.05)  # the same signal, 4x denser
