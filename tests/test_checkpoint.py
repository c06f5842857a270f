"""Training checkpoints and run folders, function by function (primus_core/training/checkpoint.py):
the round trip, the exact refusals, what a reused folder loses and keeps, and how metrics.jsonl is
cut back on resume. The end-to-end resume guards are in test_guard_train.py and test_train.py."""

from __future__ import annotations

import json
import os

import pytest
import torch

from primus_core.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
    trim_metrics,
)


def test_round_trip_in_a_folder_that_does_not_exist_yet(tmp_path):
    path = tmp_path / "a" / "b" / "checkpoint.pt"
    state = {"compat": "abc", "step": 7, "weights": {"w": torch.arange(3.0)}}
    save_checkpoint(state, path)
    assert os.listdir(path.parent) == ["checkpoint.pt"]  # no temporary left behind
    loaded = load_checkpoint(path, "abc")
    assert loaded["format"] == "primus-train-checkpoint/1"
    assert loaded["step"] == 7 and torch.equal(loaded["weights"]["w"], torch.arange(3.0))
    # the format tag is the published one: a file written by hand with it loads
    torch.save({"format": "primus-train-checkpoint/1", "compat": "abc"}, tmp_path / "hand.pt")
    assert load_checkpoint(tmp_path / "hand.pt", "abc")["compat"] == "abc"


def test_load_refusals_are_exact(tmp_path):
    missing = tmp_path / "none.pt"
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else/1", "compat": "abc"}, other)
    theirs = tmp_path / "theirs.pt"
    save_checkpoint({"compat": "xyz"}, theirs)
    cases = {
        missing: f"{missing}: no checkpoint to resume from",
        other: f"{other}: not a primus training checkpoint",
        theirs: f"{theirs}: written by a different recipe (hash xyz, this run abc); resume with "
        "the same recipe and --set values, or use another --out",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path, "abc")
        assert str(caught.value) == message
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match=r"torn\.pt: corrupt or unreadable checkpoint \("):
        load_checkpoint(torn, "abc")


def test_a_folder_left_before_the_first_checkpoint_is_emptied_of_the_run_files_only(tmp_path):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events").write_text("x")
    for name in ("recipe.yaml", "env.json", "metrics.jsonl", ".model.tmp-1", ".model.old-2"):
        (out / name).write_text("x")
    assert sorted(prepare_run_dir(out, resume=False)) == [
        ".model.old-2",
        ".model.tmp-1",
        "env.json",
        "metrics.jsonl",
        "recipe.yaml",
        "tensorboard",
    ]
    assert list(out.iterdir()) == []
    nested = tmp_path / "new" / "run"
    assert prepare_run_dir(nested, resume=False) == [] and nested.is_dir()


def test_a_folder_with_anything_else_is_never_touched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    names = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "recipe.yaml"]
    for name in names:
        (out / name).write_text("mine")
    with pytest.raises(CheckpointError) as caught:
        prepare_run_dir(out, resume=False)
    assert str(caught.value) == (
        f"{out} has no checkpoint but holds a.txt, b.txt, c.txt, d.txt, e.txt ..., which a run "
        "did not leave there; choose another --out"
    )
    (out / "f.txt").unlink()
    with pytest.raises(CheckpointError, match=r"holds a\.txt, b\.txt, c\.txt, d\.txt, e\.txt,"):
        prepare_run_dir(out, resume=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(set(names) - {"f.txt"})


def test_checkpoint_and_resume_rules_of_a_run_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as caught:
        prepare_run_dir(out, resume=True)
    assert str(caught.value) == (
        f"{out}: no checkpoint to resume from (the run stopped before its first one); start it "
        "again without --resume"
    )
    save_checkpoint({"compat": "abc"}, out / "checkpoint.pt")
    with pytest.raises(CheckpointError) as caught:
        prepare_run_dir(out, resume=False)
    assert str(caught.value) == (
        f"{out} already holds a run; pass --resume to continue it or choose another --out"
    )
    assert prepare_run_dir(out, resume=True) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError) as caught:
        prepare_run_dir(tmp_path / "file", resume=False)
    assert str(caught.value) == f"{tmp_path / 'file'} is a file; --out must be a folder"


def test_a_dead_writers_checkpoint_temporary_is_removed(tmp_path):
    out = tmp_path / "run"
    save_checkpoint({"compat": "abc"}, out / "checkpoint.pt")
    dead = 2**22 + 12345  # above any pid this machine hands out
    (out / f".checkpoint.pt.tmp-{dead}").write_bytes(b"torn")
    (out / f".checkpoint.pt.tmp-{os.getpid()}").write_bytes(b"live")
    assert prepare_run_dir(out, resume=True) == [f".checkpoint.pt.tmp-{dead}"]
    assert (out / f".checkpoint.pt.tmp-{os.getpid()}").exists()


def test_metrics_are_cut_back_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert trim_metrics(path, 3, 10) == 0 and not path.exists()
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4)]
    path.write_text("".join(rows) + '{"step": 5, "lo')  # the last line cut by a kill
    assert trim_metrics(path, 2, 99) == 2 and path.read_text() == "".join(rows[:2])
    path.write_text("".join(rows) + '{"step": 5, "lo')
    assert trim_metrics(path, None, 3) == 3 and path.read_text() == "".join(rows[:3])
    path.write_text("".join(rows) + "[1, 2]\n")  # a row that is not an object has no step
    assert trim_metrics(path, None, 4) == 4 and path.read_text() == "".join(rows)
    before = path.stat().st_mtime_ns
    assert trim_metrics(path, 4, 4) == 4 and path.stat().st_mtime_ns == before  # not rewritten
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


class Payload:
    """Not a tensor, not a container: weights-only unpickling must refuse it."""


def test_a_checkpoint_holding_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "primus-train-checkpoint/1", "compat": "abc", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="corrupt or unreadable checkpoint"):
        load_checkpoint(path, "abc")


def test_the_temporary_is_named_for_dead_writer_cleanup(tmp_path, monkeypatch):
    """A killed writer's temporary must match what prepare_run_dir removes and reuse cleans."""
    names = []
    real_save = torch.save

    def spy(obj, handle):
        names.append(os.path.basename(handle.name))
        real_save(obj, handle)

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint({"compat": "abc"}, tmp_path / "checkpoint.pt")
    assert names == [f".checkpoint.pt.tmp-{os.getpid()}"]


def test_a_live_writers_temporary_in_a_folder_without_checkpoint_is_a_run_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / f".checkpoint.pt.tmp-{os.getpid()}").write_bytes(b"partial")
    assert prepare_run_dir(out, resume=False) == [f".checkpoint.pt.tmp-{os.getpid()}"]
