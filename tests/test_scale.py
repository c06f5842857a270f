"""Scale-out through torchrun (issue 17): `primus cache build`, `primus data prepare` and `primus
embed` with 2 processes write the same bytes as 1 process and resume without recomputing; two
torchrun "nodes" on loopback train exactly like one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import primus_core
from conftest import run_primus
from primus_core.training.trainer import train as primus_train
from primus_core.zoo.modeldir import save_model_dir

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torchrun's default per rank; the same for 1 process


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def teacher_tree(root: Path) -> dict[str, bytes]:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return tree(folder)


@pytest.fixture
def one_thread():
    """This process computes with one torch thread, as each torchrun rank does (the bytes of
    a float computation may depend on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- cache build
CACHE_BUILD = ["cache", "build", "primus-hapt", "--batch-size", "16", "--json"]


def build(root: Path, *extra: str) -> dict:
    """`primus cache build` with torchrun ranks (--nproc) in fresh interpreters."""
    (row,) = json.loads(run_primus(*CACHE_BUILD, "--root", root, *extra, env=ONE_THREAD).stdout)
    return row


def build_here(cli, root: Path) -> dict:
    """`primus cache build` in this process (one process)."""
    (row,) = json.loads(cli(*CACHE_BUILD, "--root", root).out)
    return row


@pytest.mark.slow
def test_sharded_cache_build_equals_one_process_and_resumes(cli, one_thread, tmp_path):
    one = build_here(cli, tmp_path / "one")
    assert one["processes"] == 1
    two = build(tmp_path / "two", "--nproc", "2")
    assert two["processes"] == 2 and two["computed"] == one["computed"] == one["distinct"] > 16
    expected = teacher_tree(tmp_path / "one")
    assert teacher_tree(tmp_path / "two") == expected  # same shard files, same bytes
    # a run killed part-way leaves some complete shards (and maybe a temporary file): the rerun
    # embeds only what is missing and leaves the finished shards alone
    shards = sorted((next((tmp_path / "two").glob("*/shards"))).glob("*.npy"))
    lost = shards[::2]
    lost_rows = sum(np.load(p).shape[0] for p in lost)
    for p in lost:
        p.unlink()
    (shards[0].parent / ".deadbeef.npy.1234.tmp").write_bytes(b"torn")
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards[1::2]}
    again = build_here(cli, tmp_path / "two")  # the rerun in one process: the same rule per rank
    assert (again["computed"], again["cached"]) == (lost_rows, one["distinct"] - lost_rows)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept
    final = {k: v for k, v in teacher_tree(tmp_path / "two").items() if not k.endswith(".tmp")}
    assert final == expected
    assert build_here(cli, tmp_path / "two")["computed"] == 0  # one process reads the shards


# ---------------------------------------------------------------- data prepare
def prepared(cache_dir: Path) -> tuple[dict[str, bytes], dict]:
    (folder,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    files = {k: v for k, v in tree(folder).items() if k != "meta.json"}
    meta = json.loads((folder / "meta.json").read_text())
    return files, {k: meta[k] for k in ("files", "report", "windows", "sources")}


@pytest.mark.slow
def test_prepare_with_workers_and_ranks_writes_the_same_bytes(cli, tmp_path):
    cli("data", "prepare", "hapt", "--cache-dir", tmp_path / "one", "--json")
    cli("data", "prepare", "hapt", "--cache-dir", tmp_path / "pool", "--workers", "2", "--json")
    temp = tmp_path / "tmp"  # the run's TMPDIR: torchrun's log folders left nothing there
    temp.mkdir()
    ranks = ["--cache-dir", tmp_path / "ranks", "--nproc", "2"]
    run_primus("data", "prepare", "hapt", *ranks, env={"TMPDIR": str(temp)})
    assert not list(temp.iterdir())
    one = prepared(tmp_path / "one")
    assert one[1]["sources"] > 2
    assert prepared(tmp_path / "pool") == one
    assert prepared(tmp_path / "ranks") == one
    assert not list((tmp_path / "ranks").glob(".*"))  # the ranks' staging folder is gone


# ---------------------------------------------------------------- embed
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(1)
    encoder = primus_core.create("encoder", "stacked-rnn")
    path = tmp_path_factory.mktemp("m") / "model"
    return save_model_dir(encoder, path, encoder_type="stacked-rnn", encoder_params={})


@pytest.mark.slow
def test_embed_a_folder_sharded_over_two_processes_and_resumed(
    cli, one_thread, model_dir, tmp_path
):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    for i in range(5):
        (inputs / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        np.save(inputs / f"s{i % 2}" / f"rec{i}.npy", rng.normal(size=(6, 250 * (i + 2))))
    args = ["embed", model_dir, inputs, "--device", "cpu"]
    one = cli(*args, "--out", tmp_path / "one").out
    assert "5 files (5 embedded, 0 already done), 20 windows" in one
    two = run_primus(*args, "--out", tmp_path / "two", "--nproc", "2", env=ONE_THREAD).stdout
    assert "5 files (5 embedded, 0 already done), 20 windows" in two and "2 process(es)" in two
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    assert sorted(tree(tmp_path / "one")) == [f"s{i % 2}/rec{i}.npy" for i in (0, 2, 4, 1, 3)]
    # a killed run leaves whole outputs: the rerun embeds only the missing ones
    (tmp_path / "two" / "s1" / "rec3.npy").unlink()
    kept = (tmp_path / "two" / "s0" / "rec0.npy").stat().st_mtime_ns
    again = cli(*args, "--out", tmp_path / "two").out  # the rerun in one process
    assert "(1 embedded, 4 already done), 5 windows" in again
    assert (tmp_path / "two" / "s0" / "rec0.npy").stat().st_mtime_ns == kept
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    # a .txt list of inputs (relative to the list) gives one output per name
    (tmp_path / "list.txt").write_text("in/s0/rec0.npy\n# a comment\nin/s1/rec1.npy\n")
    cli("embed", model_dir, tmp_path / "list.txt", "--out", tmp_path / "l")
    assert sorted(tree(tmp_path / "l")) == ["rec0.npy", "rec1.npy"]
    assert (tmp_path / "l" / "rec1.npy").read_bytes() == tree(tmp_path / "one")["s1/rec1.npy"]


def test_embed_many_bad_inputs_are_one_line(cli, model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("embed", model_dir, tmp_path / "empty", "--out", tmp_path / "o", expect=1)
    assert result.err.strip() == f"error: {tmp_path / 'empty'}: no inputs (.npy, .npz, .csv files)"
    (tmp_path / "l.txt").write_text("nope.npy\n")
    result = cli("embed", model_dir, tmp_path / "l.txt", "--out", tmp_path / "o", expect=1)
    assert "1 listed inputs do not exist" in result.err and result.err.count("\n") == 1
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "x.npy", np.zeros((6, 10)))
    (tmp_path / "file").write_text("")
    result = cli("embed", model_dir, tmp_path / "d", "--out", tmp_path / "file", expect=2)
    assert "is a file, not a folder" in result.err
    result = cli("embed", model_dir, tmp_path / "d", "--out", tmp_path / "o", expect=1)
    assert "x.npy" in result.err and "a window needs 250" in result.err


# ---------------------------------------------------------------- two nodes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_match_one_process(one_thread, tmp_path):
    sets = [
        "encoder.hidden_size=64",
        "train.batch_size=32",
        "train.log_every=1",
        "train.batch_size_per=global",
        "train.gather_negatives=true",
    ]
    train = ["train", "imu2clip-hapt", *(f"--set={s}" for s in sets), "--max-steps", "1"]
    train += ["--no-progress", "--device", "cpu"]
    primus_train("imu2clip-hapt", sets, tmp_path / "one", max_steps=1, device="cpu", progress=False)
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                f"--log-dir={tmp_path / f'logs{rank}'}",  # not a /tmp/torchelastic_* left
                "-m",
                "primus_core",
                *train,
                "--out",
                str(tmp_path / "two"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"},
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        out, _ = node.communicate(timeout=300)
        assert node.returncode == 0, out

    def loss(run: Path) -> float:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return next(r["loss"] for r in rows if r.get("step") == 1 and "loss" in r)

    assert loss(tmp_path / "two") == pytest.approx(loss(tmp_path / "one"), rel=1e-5)
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["world_size"] == 2
    assert (tmp_path / "two" / "model" / "model.safetensors").exists()
