"""Training guards with independent oracles: a resumed run ends with the same weights as an
uninterrupted one and logs each step once; two DDP processes end with the weights of one process
on the same global batch (so the gradients really are all-reduced)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_primus
from primus_core.registry.recipes import resolve_recipe
from primus_core.training.checkpoint import load_checkpoint
from primus_core.training.trainer import compat_hash, train

SMALL = [
    "encoder.hidden_size=32",
    "train.batch_size=16",
    "losses.nn.queue_size=32",
    "train.log_every=1",
    "train.lr=1e-3",
]


def logged_steps(out) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


def final_weights(out, recipe: str, overrides) -> dict[str, torch.Tensor]:
    state = load_checkpoint(out / "checkpoint.pt", compat_hash(resolve_recipe(recipe, overrides)))
    return state["model"], state


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_resume_restores_weights_optimiser_and_step_counter(tmp_path):
    whole = train("primus-hapt", SMALL, tmp_path / "whole", max_steps=4, progress=False)
    train("primus-hapt", SMALL, tmp_path / "part", max_steps=2, progress=False)
    after_two, _ = final_weights(tmp_path / "part", "primus-hapt", SMALL)
    resumed = train(
        "primus-hapt", SMALL, tmp_path / "part", resume=True, max_steps=4, progress=False
    )
    assert whole.steps == resumed.steps == 4
    # the steps continue from the checkpoint: 1, 2 then 3, 4, each logged exactly once
    assert logged_steps(tmp_path / "part") == [1, 2, 3, 4]
    assert len(resumed.losses) == 4  # the loss history came back with the checkpoint
    want, want_state = final_weights(tmp_path / "whole", "primus-hapt", SMALL)
    got, got_state = final_weights(tmp_path / "part", "primus-hapt", SMALL)
    assert got_state["step"] == 4 and got_state["scheduler"]["last_epoch"] == 4
    assert_same_weights(got, want, atol=1e-6)
    # and training really moved the weights after the resume (not a stale copy of step 2)
    moved = [k for k in got if got[k].is_floating_point() and not torch.equal(got[k], after_two[k])]
    assert moved
    # the optimiser's moments continue too: AdamW step counts are 4, not 2
    steps = {float(s["step"]) for s in got_state["optimizer"]["state"].values()}
    assert steps == {4.0}


DDP = [
    "encoder.hidden_size=32",
    "train.batch_size=16",
    "train.log_every=1",
    "train.lr=1e-2",
    "train.batch_size_per=global",
    "train.gather_negatives=true",
]


@pytest.mark.slow
def test_two_process_ddp_weights_match_one_process_after_several_steps(tmp_path):
    steps = "3"
    train("imu2clip-hapt", DDP, tmp_path / "one", max_steps=int(steps), progress=False)
    sets = [x for s in DDP for x in ("--set", s)]
    run_primus(
        "train",
        "imu2clip-hapt",
        *sets,
        "--out",
        tmp_path / "two",
        "--max-steps",
        steps,
        "--no-progress",
        "--nproc",
        "2",
        "--device",
        "cpu",
    )
    one, _ = final_weights(tmp_path / "one", "imu2clip-hapt", DDP)
    two, _ = final_weights(tmp_path / "two", "imu2clip-hapt", DDP)
    # Adam's update is about lr * sign(gradient): float round-off of the half-batch gradients
    # (the CPU GRU's chunked sums differ with the batch) can flip the sign of a near-zero
    # gradient and move that one weight by up to ~2e-2, so compare how many weights disagree:
    # with the all-reduce almost none do; without it each rank's half batch gives many weights
    # another sign
    assert [k for k in one if one[k].is_floating_point() != two[k].is_floating_point()] == []
    differ = sum(
        int(((one[k] - two[k]).abs() > 1e-4).sum()) for k in one if one[k].is_floating_point()
    )
    total = sum(one[k].numel() for k in one if one[k].is_floating_point())
    assert differ <= total * 1e-3, f"{differ} of {total} weights differ by more than 1e-4"
    for key in one:
        if not one[key].is_floating_point():
            assert torch.equal(one[key], two[key]), key
    # the weights moved: each step's loss differs (so 1e-4 is far below one step's change);
    # without the all-reduce each rank steps on its own half batch and this fails (checked by
    # hand: benchmarks/mutation.md)
    losses = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    values = [row["loss"] for row in losses if "loss" in row]
    assert len(values) == 3 and len(set(values)) == 3
    # the first step (before any optimiser step): the same loss, negatives gathered from both
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert next(r["loss"] for r in rows if "loss" in r) == pytest.approx(values[0], rel=1e-5)
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    # every switch that ran is recorded, in the run directory and in the model's config
    switches = json.loads((tmp_path / "two" / "switches.json").read_text())
    assert switches["train"]["batch_per_device"] == 8 and switches["train"]["global_batch"] == 16
    assert switches["train"]["precision"] == "fp32"
    assert switches["train"]["temperatures"] == "shared"
    assert switches["losses"][0]["masked_rows"] == "negatives"
    config = json.loads((tmp_path / "two" / "model" / "config.json").read_text())
    assert config["switches"] == switches
