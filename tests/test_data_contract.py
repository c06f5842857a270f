"""The window contract: resampling, units, channels, windowing, validation, splits, few-shot,
weak narrations and the memory-mapped prepared cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from primus_core.config import IMUContract
from primus_core.data.windows import (
    Recording,
    WindowSet,
    check_timestamps,
    few_shot_indices,
    load_windows,
    open_cache,
    prepare,
    read_csv,
    recording_windows,
    resample,
    sliding_windows,
    split_by_subject,
    to_contract_channels,
    unit_factor,
    weak_narrations,
)
from primus_core.errors import DataError, PrimusError

SIX = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]


def _peak_hz(x: np.ndarray, rate: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    "rate_from,rate_to", [(200.0, 50.0), (1000.0, 50.0), (10.0, 50.0), (64.0, 50.0)]
)
def test_resampling_keeps_frequency(rate_from, rate_to):
    t = np.arange(int(20 * rate_from)) / rate_from
    x = np.sin(2 * np.pi * 3.0 * t)
    y = resample(x, rate_from, rate_to)
    assert abs(len(y) - 20 * rate_to) <= 1
    assert _peak_hz(y, rate_to) == pytest.approx(3.0, abs=0.1)
    # amplitude kept away from the edges
    assert np.abs(y[len(y) // 4 : -len(y) // 4]).max() == pytest.approx(1.0, abs=0.05)


def test_resampling_removes_content_above_new_nyquist():
    rate_from, rate_to = 200.0, 50.0
    t = np.arange(4000) / rate_from
    high = np.sin(2 * np.pi * 40.0 * t)  # 40 Hz would alias to 10 Hz at 50 Hz
    low = np.sin(2 * np.pi * 5.0 * t)
    y_high = resample(high, rate_from, rate_to)[50:-50]
    y_mix = resample(high + low, rate_from, rate_to)[50:-50]
    naive = high[::4][50:-50]  # decimation without a filter aliases
    assert np.sqrt(np.mean(naive**2)) > 0.5
    assert np.sqrt(np.mean(y_high**2)) < 0.01
    assert _peak_hz(y_mix, rate_to) == pytest.approx(5.0, abs=0.1)


def test_resampling_is_whole_array_along_time_axis():
    x = np.random.default_rng(0).normal(size=(1000, 6))
    y = resample(x, 100.0, 50.0)
    assert y.shape == (500, 6)
    np.testing.assert_allclose(y[:, 2], resample(x[:, 2], 100.0, 50.0))


def test_unit_conversion():
    assert unit_factor("g", "m/s^2") == pytest.approx(9.80665)
    assert unit_factor("mg", "m/s^2") == pytest.approx(0.00980665)
    assert unit_factor("deg/s", "rad/s") == pytest.approx(math.pi / 180)
    assert unit_factor("m/s^2", "m/s^2") == 1.0
    with pytest.raises(DataError, match="cannot convert g to rad/s"):
        unit_factor("g", "rad/s")
    with pytest.raises(DataError, match="unknown unit 'furlong'"):
        unit_factor("furlong", "m/s^2")


def test_channels_are_selected_reordered_and_converted():
    contract = IMUContract()
    native = ["gyro_z", "gyro_y", "gyro_x", "acc_z", "acc_y", "acc_x", "temperature"]
    data = np.array([[180.0, 90.0, 0.0, 1.0, 0.0, -1.0, 21.0]])
    out = to_contract_channels(data, native, ["deg/s"] * 3 + ["g"] * 3 + ["C"], contract)
    np.testing.assert_allclose(out[0], [-9.80665, 0, 9.80665, 0, math.pi / 2, math.pi])
    with pytest.raises(DataError, match="has no channel 'gyro_x'"):
        to_contract_channels(data[:, 3:6], native[3:6], ["g"] * 3, contract, source="f.csv")
    filled = to_contract_channels(data[:, 3:6], native[3:6], ["g"] * 3, contract, fill_missing=True)
    assert filled[0, 3:].tolist() == [0, 0, 0]


def test_sliding_windows_stride_and_zero_padded_tail():
    x = np.arange(26, dtype=float)[:, None] * np.ones((1, 2))
    win, starts = sliding_windows(x, window=10, stride=5, min_fill=0.5)
    assert starts.tolist() == [0, 5, 10, 15]  # 1 uncovered sample: no padded window
    assert win.shape == (4, 2, 10) and win.dtype == np.float32
    assert win[1, 0].tolist() == list(range(5, 15))
    win, starts = sliding_windows(x, window=10, stride=10, min_fill=0.5)
    assert starts.tolist() == [0, 10, 20]
    assert win[2, 0].tolist() == [20, 21, 22, 23, 24, 25, 0, 0, 0, 0]  # zero-padded tail
    short, _ = sliding_windows(x[:6], window=10, stride=10)
    assert short.shape == (1, 2, 10) and short[0, 0, 6:].tolist() == [0, 0, 0, 0]
    none, _ = sliding_windows(x[:4], window=10, stride=10, min_fill=0.5)
    assert none.shape == (0, 2, 10)


def test_recording_windows_in_contract_per_label_run():
    rate = 100.0
    n = int(30 * rate)
    data = np.zeros((n, 6))
    data[:, 2] = 1.0  # 1 g on z
    data[:, 3] = 90.0  # deg/s
    labels = np.full(n, -1)
    labels[: n // 2] = 0
    labels[n // 2 :] = 1
    rec = Recording(
        data=data,
        rate_hz=rate,
        channels=SIX,
        units=["g"] * 3 + ["deg/s"] * 3,
        subject=3,
        source="rec",
        labels=labels,
    )
    imu, lab = recording_windows(rec, IMUContract())
    assert imu.shape == (6, 6, 250)  # 15 s per label -> 3 windows each
    assert lab.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.allclose(imu[:, 2, 20:-20], 9.80665, atol=1e-3)
    assert np.allclose(imu[:, 3, 20:-20], math.pi / 2, atol=1e-3)
    imu2, _ = recording_windows(rec, IMUContract(), stride_s=2.5)
    assert len(imu2) == 10  # 5 per 15 s run with the padded tail dropped below min_fill


@pytest.mark.parametrize(
    "bad,message",
    [
        ("nan", r"rec\.csv: non-finite values \(NaN/inf\) in 3 row\(s\) starting at sample 100"),
        ("inf", r"rec\.csv: non-finite values .* starting at sample 100"),
        ("short", r"rec\.csv: recording has 40 samples \(0\.40 s at 100 Hz\), shorter than"),
        ("columns", r"rec\.csv: expected 6 columns, got 5"),
    ],
)
def test_recording_validation_errors(bad, message):
    data = np.zeros((1000, 6))
    if bad == "nan":
        data[100:103, 1] = np.nan
    elif bad == "inf":
        data[100, 4] = np.inf
    elif bad == "short":
        data = data[:40]
    elif bad == "columns":
        data = data[:, :5]
    rec = Recording(
        data=data,
        rate_hz=100.0,
        channels=SIX,
        units=["m/s^2"] * 3 + ["rad/s"] * 3,
        subject=0,
        source="rec.csv",
    )
    with pytest.raises(DataError, match=message) as info:
        recording_windows(rec, IMUContract())
    assert isinstance(info.value, PrimusError)


def test_timestamp_errors_name_the_line():
    check_timestamps(np.array([0.0, 0.01, 0.02]), "ok.csv", 2)
    with pytest.raises(DataError, match=r"t\.csv: duplicated timestamp at line 4 \(0\.01 after"):
        check_timestamps(np.array([0.0, 0.01, 0.01, 0.03]), "t.csv", 2)
    with pytest.raises(DataError, match=r"t\.csv: non-monotonic .* at line 3"):
        check_timestamps(np.array([0.0, 0.02, 0.01]), "t.csv", 1)


def test_csv_errors_name_file_and_line(tmp_path):
    cols = ["t_s", "x", "y"]
    path = tmp_path / "imu.csv"
    path.write_text("t_s,x,y\n0,1,2\n0.1,1,2\n")
    table, first = read_csv(path, cols)
    assert table.shape == (2, 3) and first == 2
    path.write_text("t_s,x,y\n0,1,2\n0.1,1\n0.2,1,2\n")
    with pytest.raises(DataError, match=r"imu\.csv: line 3: expected 3 columns, got 2"):
        read_csv(path, cols)
    path.write_text("t_s,x,y\n0,1,2\n0.1,1,abc\n")
    with pytest.raises(DataError, match=r"imu\.csv: line 3: not a number: 'abc'"):
        read_csv(path, cols)
    path.write_text("t_s,x,y\n0,1,2\n0.1,nan,2\n")
    with pytest.raises(DataError, match=r"imu\.csv: non-finite .* starting at line 3"):
        read_csv(path, cols)
    path.write_text("time,x,y\n0,1,2\n")
    with pytest.raises(DataError, match=r"imu\.csv: line 1: expected header 't_s,x,y'"):
        read_csv(path, cols)


def _toy_windows(subjects: list[int], labels: list[int]) -> WindowSet:
    n = len(subjects)
    return WindowSet(
        imu=np.zeros((n, 6, 250), np.float32),
        labels=np.array(labels),
        class_names=["a", "b", "c"],
        subjects=np.array(subjects),
        dataset="toy",
    )


def test_split_by_subject_never_leaks_and_is_reproducible():
    rng = np.random.default_rng(1)
    subjects = rng.integers(0, 12, size=500).tolist()
    ws = _toy_windows(subjects, [0] * 500)
    train, test = split_by_subject(ws, 0.25, seed=7)
    assert len(train) + len(test) == 500
    assert not set(ws.subjects[train]) & set(ws.subjects[test])
    assert len(set(ws.subjects[test])) == 3
    again = split_by_subject(ws, 0.25, seed=7)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    other = split_by_subject(ws, 0.25, seed=8)
    assert not np.array_equal(other[1], test)
    with pytest.raises(DataError, match="only 1 subject"):
        split_by_subject(_toy_windows([4, 4], [0, 0]), 0.5, 0)


def test_few_shot_k_per_class_seeded():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3 + [-1] * 10)
    idx = few_shot_indices(labels, k=5, seed=3)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 3]
    assert np.array_equal(idx, few_shot_indices(labels, k=5, seed=3))
    assert not np.array_equal(idx, few_shot_indices(labels, k=5, seed=4))
    with pytest.raises(DataError):
        few_shot_indices(labels, k=0, seed=0)


def test_weak_narrations_vary_and_are_reproducible():
    labels = np.array([0] * 40 + [1] * 40)
    texts = weak_narrations(labels, ["walking", "running"], key="x")
    assert texts == weak_narrations(labels, ["walking", "running"], key="x")
    assert len(set(texts[:40])) >= 3 and all("walking" in t for t in texts[:40])
    assert all("running" in t for t in texts[40:])


# ------------------------------------------------------------------------- prepared cache
def test_cache_round_trip_memory_mapped(tmp_path):
    contract = IMUContract()
    fresh = load_windows("watch-exercises", contract, tmp_path, progress=False)
    direct = (
        __import__("primus_core.data.windows", fromlist=["create_adapter"])
        .create_adapter("watch-exercises")
        .load(contract)
    )
    assert isinstance(fresh.imu, np.memmap) and not fresh.imu.flags.writeable
    assert fresh.imu.shape == direct.imu.shape and fresh.imu.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(fresh.imu), direct.imu)
    np.testing.assert_array_equal(fresh.labels, direct.labels)
    np.testing.assert_array_equal(fresh.subjects, direct.subjects)
    assert fresh.narrations == direct.narrations and fresh.class_names == direct.class_names
    folders = [p for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].name.startswith("watch-exercises-")
    assert sorted(p.name for p in folders[0].iterdir()) == [
        "imu.npy",
        "labels.npy",
        "meta.json",
        "narrations.json",
        "subjects.npy",
    ]
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["windows"] == len(direct) and len(meta["files"]["imu.npy"]["sha256"]) == 64
    # a different parameter is a different cache; the same one is reused
    prepare({"type": "watch-exercises", "stride_seconds": 2.5}, contract, tmp_path, progress=False)
    prepare("watch-exercises", contract, tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize(
    "damage,message",
    [
        ("flip", "imu.npy fails its sha256 checksum"),
        ("truncate", "imu.npy has .* bytes, expected"),
        ("delete", "labels.npy is missing"),
        ("meta", "corrupt metadata"),
    ],
)
def test_cache_corruption_is_detected(tmp_path, damage, message):
    folder = prepare("watch-exercises", IMUContract(), tmp_path, progress=False)
    imu = folder / "imu.npy"
    if damage == "flip":
        raw = bytearray(imu.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        imu.write_bytes(bytes(raw))
    elif damage == "truncate":
        imu.write_bytes(imu.read_bytes()[:-4096])
    elif damage == "delete":
        (folder / "labels.npy").unlink()
    else:
        (folder / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=message):
        open_cache(folder)
    with pytest.raises(DataError, match=message):
        load_windows("watch-exercises", IMUContract(), tmp_path, progress=False)


def test_failed_prepare_leaves_nothing(tmp_path):
    import zipfile

    data = tmp_path / "realworld" / "proband1" / "data"
    data.mkdir(parents=True)
    rows = "\n".join(f"{i},{1_400_000_000_000 + 20 * i},0.1,9.8,0.2" for i in range(1, 800))
    for kind in ("acc", "gyr"):  # a good first source, then a broken one
        with zipfile.ZipFile(data / f"{kind}_climbingdown_csv.zip", "w") as zf:
            zf.writestr(
                f"{kind}_climbingdown_head.csv", "id,attr_time,attr_x,attr_y,attr_z\n" + rows
            )
        (data / f"{kind}_walking_csv.zip").write_bytes(b"not a zip")
    root, cache = tmp_path / "realworld", tmp_path / "cache"
    with pytest.raises(DataError, match="not a valid zip archive"):
        prepare({"type": "realworld", "root": str(root)}, IMUContract(), cache, progress=False)
    assert list(cache.iterdir()) == []


def test_imu2clip_contract_200hz(tmp_path):
    contract = IMUContract(rate_hz=200.0, window_samples=1000)
    ws = load_windows("basicmotions", contract, tmp_path, progress=False)
    assert ws.imu.shape == (160, 6, 1000)
