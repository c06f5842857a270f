"""The teacher-embedding cache: content addressing, hit/miss counts, batching, persistence across
instances and processes, two concurrent writer processes, a writer killed mid-run, torn files.

The teacher here is a deterministic hash of the text (the cache never looks inside a teacher), so
that writer processes start in well under a second; tests/test_teachers.py runs real teachers
through the cache."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import primus_core
from primus_core.data.cache import EmbeddingCache, canonical_input, path_digest, teacher_folder_name
from primus_core.data.embed_many import list_inputs
from primus_core.errors import DataError

TESTS = Path(__file__).resolve().parent
DIM = 8


class HashTeacher:
    """Text -> a fixed unit vector derived from sha256(text); records every batch it embeds."""

    modality = "text"
    output_size = DIM

    def __init__(self, version: int = 1, delay_s: float = 0.0):
        self.identity = f"hash-teacher|v{version}"
        self.delay_s = delay_s
        self.batches: list[list[str]] = []

    @staticmethod
    def vector(text: str) -> np.ndarray:
        raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[: DIM * 4], dtype=np.uint32)
        v = raw.astype(np.float64) / 2**32 - 0.5
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed(self, inputs: list[str]) -> torch.Tensor:
        self.batches.append(list(inputs))
        time.sleep(self.delay_s)
        return torch.from_numpy(np.stack([self.vector(t) for t in inputs]))


def expected(texts: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.stack([HashTeacher.vector(t) for t in texts]))


def shards(root: Path, teacher: HashTeacher) -> list[Path]:
    return sorted((root / teacher_folder_name(teacher.identity) / "shards").glob("*.npy"))


def test_second_call_computes_nothing(tmp_path):
    teacher = HashTeacher()
    cache = EmbeddingCache(tmp_path, progress=False)
    texts = ["walking", "sitting", "walking", "lying", "standing", "sitting"]
    first = cache.get_or_compute(teacher, texts, batch_size=2)
    torch.testing.assert_close(first, expected(texts))
    assert [len(b) for b in teacher.batches] == [2, 2]  # 4 distinct texts in batches of 2
    assert (cache.hits, cache.misses) == (2, 4)
    teacher.batches.clear()
    second = cache.get_or_compute(teacher, texts, batch_size=2)
    assert teacher.batches == []
    torch.testing.assert_close(second, first)
    assert (cache.hits, cache.misses) == (8, 4)


def test_only_misses_are_computed_and_counts_persist(tmp_path):
    teacher = HashTeacher()
    EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, ["a", "b", "c"])
    teacher.batches.clear()
    later = EmbeddingCache(tmp_path, progress=False)  # a new instance reads the disk
    out = later.get_or_compute(teacher, ["c", "d", "a", "e"], batch_size=64)
    assert teacher.batches == [["d", "e"]]
    torch.testing.assert_close(out, expected(["c", "d", "a", "e"]))
    info = later.info()
    (row,) = info["teachers"]
    assert (row["entries"], row["dim"], row["shards"]) == (5, DIM, 2)
    assert (row["hits"], row["misses"]) == (2, 5)  # summed over both instances
    assert info["size_bytes"] == sum(p.stat().st_size for p in shards(tmp_path, teacher)) > 0


def test_keys_depend_on_teacher_identity(tmp_path):
    cache = EmbeddingCache(tmp_path, progress=False)
    v1, v2 = HashTeacher(version=1), HashTeacher(version=2)
    cache.get_or_compute(v1, ["a", "b"])
    cache.get_or_compute(v2, ["a", "b"])
    assert len(v2.batches) == 1  # another identity: computed again
    assert len(cache.info()["teachers"]) == 2


def test_empty_inputs(tmp_path):
    out = EmbeddingCache(tmp_path, progress=False).get_or_compute(HashTeacher(), [])
    assert out.shape == (0, DIM)


def test_canonical_inputs(tmp_path):
    assert canonical_input("a") != canonical_input(b"a")
    a = np.arange(6, dtype=np.uint8)
    assert canonical_input(a) == canonical_input(a.copy())
    assert canonical_input(a) != canonical_input(a.reshape(2, 3))
    assert canonical_input([a, a]) != canonical_input([a])
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    one.write_bytes(b"same bytes")
    two.write_bytes(b"same bytes")
    assert canonical_input(one) == canonical_input(two)  # by content, not by name
    assert path_digest(tmp_path) != path_digest(one)
    with pytest.raises(DataError, match="cannot cache"):
        canonical_input(3.5)


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_cache import HashTeacher
from primus_core.data.cache import EmbeddingCache
root, start, stop, delay, go_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
while time.time() < go_at:
    time.sleep(0.005)
texts = [f"window {{i}}" for i in range(start, stop)]
EmbeddingCache(root, progress=False).get_or_compute(HashTeacher(delay_s=delay), texts, batch_size=5)
print("done", flush=True)
"""


def _writer(root: Path, start: int, stop: int, delay: float, go_at: float) -> subprocess.Popen:
    code = WRITER.format(tests=str(TESTS))
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(start), str(stop), str(delay), str(go_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_concurrent_writer_processes(tmp_path):
    go_at = time.time() + 2.0  # both start writing at the same moment
    procs = [_writer(tmp_path, 0, 40, 0.01, go_at), _writer(tmp_path, 20, 60, 0.01, go_at)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    teacher = HashTeacher()
    cache = EmbeddingCache(tmp_path, progress=False)
    texts = [f"window {i}" for i in range(60)]
    torch.testing.assert_close(cache.get_or_compute(teacher, texts), expected(texts))
    assert teacher.batches == []  # everything both writers computed is readable
    (row,) = cache.info()["teachers"]
    assert row["entries"] == 60
    assert row["misses"] >= 60  # overlapping inputs may have been computed by both writers


def test_killed_writer_leaves_a_readable_cache(tmp_path):
    teacher = HashTeacher()
    proc = _writer(tmp_path, 0, 50, 0.4, time.time())  # 10 batches of 5, 0.4 s each
    deadline = time.time() + 30
    while len(shards(tmp_path, teacher)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done = len(shards(tmp_path, teacher))
    assert 2 <= done < 10
    texts = [f"window {i}" for i in range(50)]
    out = EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, texts, batch_size=50)
    torch.testing.assert_close(out, expected(texts))
    assert len(teacher.batches[0]) <= 50 - 5 * done  # what the killed writer finished is kept


def test_torn_files_are_never_read(tmp_path):
    teacher = HashTeacher()
    cache = EmbeddingCache(tmp_path, progress=False)
    cache.get_or_compute(teacher, ["a", "b"])
    (good,) = shards(tmp_path, teacher)
    folder = good.parent
    data = good.read_bytes()
    # a writer killed mid-write leaves a temporary file: ignored, and swept when stale
    torn_tmp = folder / ".deadbeef.npy.tmp"
    torn_tmp.write_bytes(data[: len(data) // 2])
    # a shard damaged after the fact (disk trouble): skipped with a warning, never a crash
    (folder / "damaged.npy").write_bytes(data[: len(data) - 7])
    (folder / "garbage.npy").write_bytes(b"not an npy file")
    teacher.batches.clear()
    fresh = EmbeddingCache(tmp_path, progress=False)
    with pytest.warns(UserWarning, match="skipping unreadable shard"):
        out = fresh.get_or_compute(teacher, ["a", "b", "c"])
    torch.testing.assert_close(out, expected(["a", "b", "c"]))
    assert teacher.batches == [["c"]]
    old = time.time() - 2 * 3600
    os.utime(torn_tmp, (old, old))
    with pytest.warns(UserWarning, match="skipping unreadable shard"):
        EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, ["a"])
    assert not torn_tmp.exists()


def test_cache_info_cli(cli, tmp_path):
    empty = cli("cache", "info", "--root", str(tmp_path / "none")).out
    assert "no teacher embeddings cached yet" in empty
    EmbeddingCache(tmp_path, progress=False).get_or_compute(HashTeacher(), ["a", "b", "a"])
    out = cli("cache", "info", "--root", str(tmp_path)).out
    assert "hash-teacher|v1" in out and "1 hits, 2 misses" in out


def test_a_damaged_shard_is_skipped_and_its_inputs_computed_again(tmp_path):
    teacher = HashTeacher()
    EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, ["a", "b"])
    (first,) = shards(tmp_path, teacher)
    EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, ["c"])
    (only_c,) = set(shards(tmp_path, teacher)) - {first}  # "c" is in no other shard
    only_c.write_bytes(only_c.read_bytes()[:-7])  # disk trouble after the fact
    teacher.batches.clear()
    fresh = EmbeddingCache(tmp_path, progress=False)
    with pytest.warns(UserWarning, match="skipping unreadable shard"):
        out = fresh.get_or_compute(teacher, ["a", "b", "c"])
    torch.testing.assert_close(out, expected(["a", "b", "c"]))
    assert teacher.batches == [["c"]]  # only the damaged shard's input
    assert (fresh.last.cached, fresh.last.computed) == (2, 1)
    teacher.batches.clear()  # the recomputed row is stored for good
    later = EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, ["c"])
    torch.testing.assert_close(later, expected(["c"]))
    assert teacher.batches == []


class _RunsOnUnpickle:
    """Unpickling this makes a folder: the sign that a pickled shard was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickled_shard_is_refused_without_running_it(tmp_path):
    teacher = HashTeacher()
    EmbeddingCache(tmp_path, progress=False).get_or_compute(teacher, ["a"])
    (good,) = shards(tmp_path, teacher)
    marker = tmp_path / "pickle-ran"
    evil = np.array([_RunsOnUnpickle(marker)], dtype=object)
    np.save(good.parent / "0000pickled.npy", evil, allow_pickle=True)  # sorts first
    # an object array of the shard's own dtype shape is refused too: only plain rows are read
    np.save(good.parent / "0001objects.npy", np.array([b"k" * 32, None], dtype=object))
    teacher.batches.clear()
    fresh = EmbeddingCache(tmp_path, progress=False)
    with pytest.warns(UserWarning, match="skipping unreadable shard") as caught:
        out = fresh.get_or_compute(teacher, ["a", "b"])
    assert sum("skipping unreadable shard" in str(w.message) for w in caught) == 2
    assert not marker.exists()  # the pickle never ran
    torch.testing.assert_close(out, expected(["a", "b"]))
    assert teacher.batches == [["b"]]
    with pytest.warns(UserWarning, match="skipping unreadable shard"):
        (row,) = fresh.info()["teachers"]
    assert (row["shards"], row["entries"]) == (2, 2)  # the two plain shards only


def test_default_root_is_primus_home_cache_teachers(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIMUS_HOME", str(tmp_path / "home"))
    assert EmbeddingCache().root == tmp_path / "home" / "cache" / "teachers"
    EmbeddingCache(progress=False).get_or_compute(HashTeacher(), ["a"])
    folder = tmp_path / "home" / "cache" / "teachers" / teacher_folder_name("hash-teacher|v1")
    assert len(list((folder / "shards").glob("*.npy"))) == 1
    info = json.loads(cli("cache", "info", "--json").out)  # no --root: the same folder
    assert info["root"] == str(tmp_path / "home" / "cache" / "teachers")
    assert info["teachers"][0]["entries"] == 1
    # without PRIMUS_HOME: ~/.cache/primus/cache/teachers
    monkeypatch.delenv("PRIMUS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert EmbeddingCache().root == tmp_path / "user" / ".cache" / "primus" / "cache" / "teachers"


# ---------------------------------------------------------------- `primus embed` outputs
class _Killed(BaseException):
    """The process dying mid-write (nothing in the CLI handles it)."""


def test_an_interrupted_embed_leaves_only_whole_outputs(cli, tmp_path, monkeypatch):
    """docs/scale.md: `embed` writes one `.npy` per input atomically; a rerun embeds only the
    inputs with no output (a killed writer's temporary is neither an output nor done)."""
    from primus_core.zoo.modeldir import save_model_dir

    torch.manual_seed(1)
    encoder = primus_core.create("encoder", "stacked-rnn")
    model = save_model_dir(
        encoder, tmp_path / "model", encoder_type="stacked-rnn", encoder_params={}
    )
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(inputs / f"rec{i}.npy", rng.normal(size=(6, 500)))  # 2 windows of 250 each
    args = ["embed", model, inputs, "--device", "cpu"]
    clean = cli(*args, "--out", tmp_path / "clean").out
    assert "3 files (3 embedded, 0 already done), 6 windows" in clean
    want = {p.name: p.read_bytes() for p in (tmp_path / "clean").iterdir()}
    assert sorted(want) == ["rec0.npy", "rec1.npy", "rec2.npy"]

    real_save = np.save
    saves = []

    def dies_mid_write(file, array, *rest, **kwargs):
        saves.append(Path(file.name))  # embed writes through an open temporary
        if len(saves) == 2:  # the second output: half its bytes written, then the process dies
            file.write(want["rec1.npy"][: len(want["rec1.npy"]) // 2])
            file.flush()
            raise _Killed
        return real_save(file, array, *rest, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(np, "save", dies_mid_write)
    with pytest.raises(_Killed):
        cli(*args, "--out", out)
    monkeypatch.setattr(np, "save", real_save)
    torn = saves[1]
    assert torn.parent == out and torn.name.startswith(".") and torn.exists()
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"rec0.npy"}
    assert (out / "rec0.npy").read_bytes() == want["rec0.npy"]  # the finished output is whole
    # another killed process's torn temporary of rec2 is not an output either; the rerun (a
    # live process) removes the dead writers' temporaries of the names it writes
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (out / f".rec2.npy.tmp-{dead}").write_bytes(want["rec2.npy"][:40])
    (torn.parent / f".rec1.npy.tmp-{dead}").write_bytes(torn.read_bytes())
    torn.unlink()  # the torn file of this (still running) test process, as if it had died
    # a folder holding temporaries used as input: they are not inputs
    assert [p.name for p, _ in list_inputs(out)] == ["rec0.npy"]
    again = cli(*args, "--out", out).out
    assert "3 files (2 embedded, 1 already done), 4 windows" in again
    assert {p.name: p.read_bytes() for p in out.iterdir()} == want  # no temporary left
