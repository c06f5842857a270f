"""The trainer on real offline data (UCI HAPT + the MiniLM teacher): loss goes down, exact
resume, signals, atomic checkpoints, 2-process gloo DDP."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import run_primus
from primus_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from primus_core.errors import PrimusError, RecipeError
from primus_core.modeldir import load_model_dir
from primus_core.train import train

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
        [sys.executable, "-m", "primus_core.cli", *map(str, args)],
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
    run_primus(
        *args[: -2 * len(SMALL)],
        *[x for s in SMALL for x in ("--set", s)],
        "--resume",
        "--max-steps",
        str(stopped + 2),
    )
    assert max(step_losses(out)) == stopped + 2


def _compat():
    from primus_core.recipes import resolve_recipe
    from primus_core.train import compat_hash

    return compat_hash(resolve_recipe("primus-hapt", SMALL))


def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    # one global batch of 32 contrasted across both processes equals one process's batch of 32
    recipe = [
        "encoder.hidden_size=64",
        "train.batch_size=32",
        "train.log_every=1",
        "train.batch_size_per=global",
        "train.gather_negatives=true",
    ]
    sets = [x for s in recipe for x in ("--set", s)]
    run_primus(
        "train",
        "imu2clip-hapt",
        *sets,
        "--out",
        tmp_path / "one",
        "--max-steps",
        "1",
        "--no-progress",
    )
    run_primus(
        "train",
        "imu2clip-hapt",
        *sets,
        "--out",
        tmp_path / "two",
        "--max-steps",
        "1",
        "--no-progress",
        "--nproc",
        "2",
        "--device",
        "cpu",
    )
    one, two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert two[1] == pytest.approx(one[1], rel=1e-5)
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["world_size"] == 2
    assert (tmp_path / "two" / "model" / "model.safetensors").exists()
    # every switch that ran is recorded, in the run directory and in the model's config
    switches = json.loads((tmp_path / "two" / "switches.json").read_text())
    assert switches["train"]["batch_per_device"] == 16 and switches["train"]["global_batch"] == 32
    assert (
        switches["train"]["precision"] == "fp32" and switches["train"]["temperatures"] == "shared"
    )
    assert switches["losses"][0]["masked_rows"] == "negatives"
    config = json.loads((tmp_path / "two" / "model" / "config.json").read_text())
    assert config["switches"] == switches
