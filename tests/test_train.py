"""The trainer on real offline data (UCI HAPT + the MiniLM teacher): loss goes down, exact
resume, signals, atomic checkpoints, 2-process gloo DDP."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from primus_core.errors import PrimusError, RecipeError
from primus_core.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from primus_core.training.trainer import train
from primus_core.zoo.modeldir import load_model_dir

SMALL = [
    "encoder.hidden_size=64",
    "train.batch_size=32",
    "losses.nn.queue_size=64",
    "train.log_every=1",
    "train.lr=1e-3",
]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def step_losses(out):
    return {row["step"]: row["loss"] for row in metrics(out) if "loss" in row}


def test_training_lowers_the_loss_and_writes_a_model_dir(tmp_path):
    result = train("primus-hapt", SMALL, tmp_path / "run", max_steps=40, progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first, (first, last)
    rows = metrics(tmp_path / "run")
    assert {"ss", "mm", "nn", "lr", "windows_per_s"} <= set(rows[0])
    assert any(row.get("val_loss") is not None for row in rows)
    for name in ("recipe.yaml", "env.json", "checkpoint.pt", "model/config.json"):
        assert (tmp_path / "run" / name).exists(), name
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["recipe"]["name"] == "primus-hapt" and config["training_data"] == ["hapt"]
    assert config["encoder"]["params"]["mmcl_dim"] == 384  # follows the MiniLM teacher
    encoder = load_model_dir(tmp_path / "run" / "model")
    assert encoder(torch.randn(2, 6, 250))["mmcl"].shape == (2, 384)


def test_exact_resume(tmp_path):
    whole = train("primus-hapt", SMALL, tmp_path / "whole", max_steps=6, progress=False)
    assert whole.steps == 6
    part = train("primus-hapt", SMALL, tmp_path / "part", max_steps=3, progress=False)
    assert part.steps == 3
    resumed = train(
        "primus-hapt", SMALL, tmp_path / "part", resume=True, max_steps=6, progress=False
    )
    assert resumed.steps == 6
    expected, got = step_losses(tmp_path / "whole"), step_losses(tmp_path / "part")
    for step in range(1, 7):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


def test_resume_refuses_other_recipes_and_corrupt_checkpoints(tmp_path):
    train("primus-hapt", SMALL, tmp_path / "run", max_steps=2, progress=False)
    with pytest.raises(CheckpointError, match="different recipe"):
        train(
            "primus-hapt", [*SMALL, "train.lr=0.5"], tmp_path / "run", resume=True, progress=False
        )
    with pytest.raises(PrimusError, match="already holds a run"):
        train("primus-hapt", SMALL, tmp_path / "run", progress=False)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        train("primus-hapt", SMALL, tmp_path / "run", resume=True, progress=False)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"compat": "x", "step": 1}, path)

    def crash(obj, handle):
        handle.write(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint({"compat": "x", "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path, "x")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_bad_set_paths_and_values(cli, tmp_path):
    result = cli(
        "train", "primus-hapt", "--set", "train.batch_sise=3", "--out", tmp_path / "r", expect=1
    )
    assert "train.batch_sise: Extra inputs are not permitted" in result.err
    result = cli(
        "train",
        "primus-hapt",
        "--set",
        "encoder.hidden_size=big",
        "--out",
        tmp_path / "r",
        expect=1,
    )
    assert "encoder.hidden_size: Input should be a valid integer" in result.err
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        train("primus-hapt", ["train.lr"], tmp_path / "r")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "primus-hapt",
        "--out",
        out,
        "--no-progress",
        "--max-steps",
        "400",
        *[x for s in SMALL for x in ("--set", s)],
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "primus_core", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len(step_losses(out)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM: checkpoint saved at step" in err
    stopped = load_checkpoint(out / "checkpoint.pt", _compat())["step"]
    assert 3 <= stopped < 400
    resumed = train("primus-hapt", SMALL, out, resume=True, max_steps=stopped + 2, progress=False)
    assert resumed.steps == stopped + 2 and max(step_losses(out)) == stopped + 2


def _compat():
    from primus_core.registry.recipes import resolve_recipe
    from primus_core.training.trainer import compat_hash

    return compat_hash(resolve_recipe("primus-hapt", SMALL))


# ---------------------------------------------------------------- issue 13 (items 5, 7, 8)
def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_folder_of_a_run_that_died_before_its_first_checkpoint_is_reused(tmp_path, cli, caplog):
    """Item 5: such a folder was refused both by a new run and by --resume."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text("name: primus-hapt\n")
    (out / "env.json").write_text("{}\n")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo')
    (out / f".checkpoint.pt.tmp-{dead_pid()}").write_bytes(b"partial")
    sets = [x for s in SMALL for x in ("--set", s)]
    refused = cli("train", "primus-hapt", *sets, "--out", out, "--resume", expect=1)
    assert "no checkpoint to resume from" in refused.err and "without --resume" in refused.err
    assert not list(out.glob(".checkpoint.pt.tmp-*"))  # a dead writer's file goes either way
    (out / f".checkpoint.pt.tmp-{dead_pid()}").write_bytes(b"partial")
    with caplog.at_level("INFO", logger="primus.train"):
        cli("train", "primus-hapt", *sets, "--out", out, "--max-steps", "1", "--no-progress")
    said = next(r.getMessage() for r in caplog.records if "removed" in r.getMessage())
    assert "metrics.jsonl" in said and ".checkpoint.pt.tmp-" in said and "env.json" in said
    assert [row["step"] for row in metrics(out) if "loss" in row] == [1]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    # a folder with something a run did not write is never emptied
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    line = cli("train", "primus-hapt", "--out", other, expect=1).err.strip().splitlines()[-1]
    assert line.startswith("error:") and "notes.txt" in line
    assert (other / "notes.txt").read_text() == "mine\n"


def test_resume_from_an_earlier_checkpoint_does_not_repeat_steps(tmp_path):
    """Item 8: rows logged after the checkpoint a run resumes from were logged twice."""
    import shutil

    from primus_core.training.checkpoint import trim_metrics

    out = tmp_path / "run"
    train("primus-hapt", SMALL, out, max_steps=2, progress=False)
    shutil.copy(out / "checkpoint.pt", tmp_path / "at2.pt")
    train("primus-hapt", SMALL, out, resume=True, max_steps=4, progress=False)
    shutil.copy(tmp_path / "at2.pt", out / "checkpoint.pt")  # as if killed before saving step 4
    train("primus-hapt", SMALL, out, resume=True, max_steps=4, progress=False)
    steps = [row["step"] for row in metrics(out) if "loss" in row]
    assert steps == [1, 2, 3, 4]
    # checkpoints written before the row count was saved: cut by step
    path = tmp_path / "m.jsonl"
    path.write_text("".join(f'{{"step": {s}}}\n' for s in (1, 2, 3)) + '{"step": 4, "lo')
    assert trim_metrics(path, None, 2) == 2 and path.read_text().count("\n") == 2


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.seed=-1", "train.seed"),
        ("train.seed=99999999999999999999", "train.seed"),
        ("losses.nn.weight=-0.5", "losses.1.weight"),
        ("train.lr=nan", "train.lr"),
        ("train.lr=inf", "train.lr"),
    ],
)
def test_bad_recipe_values_are_one_error_line(cli, tmp_path, setting, message):
    """Items 6 and 7: a negative or huge seed was a traceback, a negative loss weight trained."""
    result = cli("train", "primus-hapt", "--set", setting, "--out", tmp_path / "r", expect=1)
    line = result.err.strip().splitlines()[-1]
    assert line.startswith("error:") and "Traceback" not in result.err
    assert message.split(".")[0] in line, line
    assert not (tmp_path / "r").exists()


def test_static_step_matches_the_eager_step(tmp_path):
    """train.step=static (the code path a CUDA graph captures: fixed shapes, no host sync, the NN
    queues written inside the step) gives the eager step's losses and weights."""
    settings = [*SMALL, "train.log_every=2"]
    eager = train("primus-hapt", settings, tmp_path / "eager", max_steps=5, progress=False)
    static = train(
        "primus-hapt",
        [*settings, "train.step=static"],
        tmp_path / "static",
        max_steps=5,
        progress=False,
    )
    assert static.losses == pytest.approx(eager.losses, rel=1e-5, abs=1e-6)
    assert all(isinstance(v, float) for v in static.losses)
    assert step_losses(tmp_path / "static") == pytest.approx(step_losses(tmp_path / "eager"))
    a = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "static" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6), key
    assert int(b["losses.nn.queue_ptr"]) == (5 * 32) % 64  # queues written inside the step


def test_graph_step_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(PrimusError, match="CUDA graph"):
        train("primus-hapt", [*SMALL, "train.step=graph"], tmp_path / "g", max_steps=1)
