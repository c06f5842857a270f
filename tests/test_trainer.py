"""The training loop, piece by piece and in process (primus_core/training/trainer.py): each piece
against an oracle written here (a sum by hand, an optimiser step taken by hand, the documented
sampler rule), so that mutation testing can run it. The end-to-end guards (resume, DDP) are in
test_guard_train.py and test_train.py."""

from __future__ import annotations

import copy
import json
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from primus_core.data.shard import Ranks
from primus_core.data.windows import WindowSet
from primus_core.errors import PrimusError
from primus_core.registry.recipes import resolve_recipe
from primus_core.training.trainer import (
    BatchSource,
    Pretrainer,
    StopRequest,
    Trainer,
    amp_settings,
    build_encoder,
    build_run,
    check_step_mode,
    compat_hash,
    epoch_order,
    select_corpus,
    switches,
    teacher_targets,
)

TINY = [
    "encoder.hidden_size=16",
    "train.batch_size=8",
    "losses.nn.queue_size=16",
    "data.max_windows=64",
    "train.lr=1e-3",
]
CPU = torch.device("cpu")


def make_run(tmp_path, *sets: str, recipe: str = "primus-hapt", d: Ranks | None = None):
    tiny = TINY if recipe == "primus-hapt" else [s for s in TINY if not s.startswith("losses.")]
    loaded = resolve_recipe(recipe, [*tiny, *sets])
    (tmp_path / "run").mkdir(exist_ok=True)
    return build_run(loaded, tmp_path / "run", CPU, d or Ranks(), progress=False)


def make_trainer(tmp_path, *sets: str, max_steps: int | None = None) -> Trainer:
    return Trainer(make_run(tmp_path, *sets), max_steps, progress=False)


# ---------------------------------------------------------------- the model being trained
class HalfSum(nn.Module):
    """A stand-in encoder: {"emb": the mean over time, "double": twice it}; counts its calls."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x)
        emb = self.scale * x.mean(-1)
        return {"emb": emb, "double": 2 * emb}


class Recorded(nn.Module):
    """A stand-in loss: returns (value, {"part": value / 2}) and keeps the batch it saw."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value
        self.seen = None

    def forward(self, batch):
        self.seen = batch
        out = self.value * batch.imu["emb"].sum() / batch.imu["emb"].sum().detach()
        return out, {"part": out / 2}


def test_the_total_is_the_weighted_sum_of_the_losses_and_the_views_are_split():
    gen = torch.Generator().manual_seed(0)
    x, x_aug = torch.randn(3, 2, 5, generator=gen), torch.randn(3, 2, 5, generator=gen)
    losses = {"a": Recorded(1.5), "b": Recorded(-4.0)}
    model = Pretrainer(HalfSum(), losses, {"a": 2.0, "b": 0.25})
    teachers, masks = {"text": torch.randn(3, 4)}, {"text": torch.tensor([True, False, True])}
    total, terms = model(x, x_aug, teachers, masks, torch.tensor([0, 1, 2]), gather=False)
    assert float(total.detach()) == pytest.approx(2.0 * 1.5 + 0.25 * -4.0)
    assert total.requires_grad
    assert set(terms) == {"a", "a/part", "b", "b/part"}
    assert float(terms["b"]) == pytest.approx(-4.0) and float(terms["a/part"]) == pytest.approx(
        0.75
    )
    assert not any(t.requires_grad for t in terms.values())
    # one encoder call on both views; the first half is x, the second x_aug
    (seen,) = model.encoder.inputs
    assert torch.equal(seen, torch.cat([x, x_aug]))
    batch = losses["a"].seen
    torch.testing.assert_close(batch.imu["emb"], x.mean(-1))
    torch.testing.assert_close(batch.imu_aug["emb"], x_aug.mean(-1))
    torch.testing.assert_close(batch.imu_aug["double"], 2 * x_aug.mean(-1))
    assert batch.teachers is teachers and batch.teacher_mask is masks
    assert batch.labels.tolist() == [0, 1, 2] and batch.gathered is False
    # without an augmented view: the encoder sees x alone and there is no imu_aug
    model.encoder.inputs.clear()
    model(x, None, {}, {}, None, gather=False)
    assert torch.equal(model.encoder.inputs[0], x) and losses["b"].seen.imu_aug is None


# ---------------------------------------------------------------- data on the device
def test_batch_source_returns_the_rows_of_the_indices():
    imu = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    emb, mask = torch.arange(10.0).reshape(5, 2), torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)
    source = BatchSource(imu, {"text": (emb, mask)}, np.array([4, 3, 2, 1, 0]), CPU)
    assert len(source) == 5
    x, teachers, masks, labels = source.batch(torch.tensor([3, 0, 3]))
    assert torch.equal(x, torch.from_numpy(imu[[3, 0, 3]]))
    assert teachers["text"].tolist() == [[6.0, 7.0], [0.0, 1.0], [6.0, 7.0]]
    assert masks["text"].tolist() == [True, True, True]
    assert labels.tolist() == [1, 4, 1] and labels.dtype == torch.int64
    assert BatchSource(imu, {}, None, CPU).batch(torch.tensor([1]))[3] is None


def test_a_read_only_memory_mapped_cache_gives_no_warning(tmp_path):
    """Prepared windows are memory-mapped read-only; torch warns (once per process, so in a
    fresh one here) about a non-writable array that BatchSource only reads."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5))
    code = (
        "import numpy as np, torch; from primus_core.training.trainer import BatchSource; "
        f"m = np.load({str(tmp_path / 'x.npy')!r}, mmap_mode='r'); "
        "x = BatchSource(m, {}, None, torch.device('cpu')).batch(torch.tensor([2]))[0]; "
        "assert torch.equal(x, torch.from_numpy(np.array(m[[2]])))"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-500:]


def test_epoch_order_splits_one_permutation_across_ranks_like_distributed_sampler():
    n, seed = 23, 5
    single = epoch_order(n, seed, 0, Ranks())
    assert sorted(single.tolist()) == list(range(n))  # every window once
    assert torch.equal(epoch_order(n, seed, 0, Ranks()), single)  # seeded
    assert not torch.equal(epoch_order(n, seed, 1, Ranks()), single)  # a new order per epoch
    assert not torch.equal(epoch_order(n, seed + 1, 0, Ranks()), single)
    for world in (2, 3, 4):
        parts = [epoch_order(n, seed, 0, Ranks(rank, world)) for rank in range(world)]
        usable = n // world
        assert all(len(p) == usable for p in parts)
        # interleaving the ranks' orders gives the one-process order, cut to a whole number
        # of global batches: rank r takes positions r, r + world, ...
        woven = torch.stack(parts, dim=1).reshape(-1)
        assert torch.equal(woven, single[: usable * world])
    # and each rank's order is exactly torch's DistributedSampler's (drop_last, set_epoch)
    for world, rank, epoch in [(1, 0, 0), (1, 0, 3), (2, 1, 2), (3, 2, 5), (4, 0, 1)]:
        sampler = DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        assert epoch_order(n, seed, epoch, Ranks(rank, world)).tolist() == list(sampler)


def windows_of(labels, names=("sit", "walk", "run")) -> WindowSet:
    n = len(labels)
    return WindowSet(
        imu=np.arange(n, dtype=np.float32).reshape(n, 1, 1),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=list(names),
        subjects=np.zeros(n, dtype=np.int64),
        narrations=[f"n{i}" for i in range(n)],
    )


def test_select_corpus_keeps_the_named_classes_then_a_seeded_subset():
    windows = windows_of([0, 1, 2, 1, 0, 2, 1, 1])
    assert select_corpus(windows, None, None, 0) is windows
    assert select_corpus(windows, None, 8, 0) is windows  # max_windows == N: all of them
    walk = select_corpus(windows, ["walk"], None, 0)
    assert walk.imu[:, 0, 0].tolist() == [1, 3, 6, 7] and walk.narrations == [
        "n1",
        "n3",
        "n6",
        "n7",
    ]
    two = select_corpus(windows, ["run", "sit"], None, 0)
    assert two.imu[:, 0, 0].tolist() == [0, 2, 4, 5]
    some = select_corpus(windows, ["walk", "run"], 3, seed=1)
    kept = some.imu[:, 0, 0].tolist()
    assert len(kept) == 3 and kept == sorted(kept) and set(kept) <= {1, 2, 3, 5, 6, 7}
    assert select_corpus(windows, ["walk", "run"], 3, seed=1).imu[:, 0, 0].tolist() == kept
    drawn = {tuple(select_corpus(windows, None, 4, seed=s).imu[:, 0, 0]) for s in range(20)}
    assert len(drawn) > 5  # the seed picks the subset
    for seed in range(20):  # without replacement: never the same window twice
        picked = select_corpus(windows, None, 7, seed=seed).imu[:, 0, 0].tolist()
        assert len(set(picked)) == 7
    with pytest.raises(PrimusError) as caught:
        select_corpus(windows, ["walk", "swim", "fly"], None, 0)
    assert str(caught.value) == (
        "data.include_classes: unknown classes ['fly', 'swim']; the data has ['sit', 'walk', 'run']"
    )


class FakeTeacher:
    """A text teacher that embeds a narration as (its length, 1, 0) and skips "bad" (NaN row)."""

    identity = "fake-teacher|test"
    modality = "text"
    output_size = 3

    def embed(self, texts):
        rows = [[float("nan")] * 3 if t == "bad" else [float(len(t)), 1.0, 0.0] for t in texts]
        return torch.tensor(rows)


def test_teacher_targets_mask_windows_without_input_or_skipped():
    windows = windows_of([0] * 5)
    windows.narrations = ["ab", None, "", "bad", "abcd"]
    (emb, mask) = teacher_targets([FakeTeacher()], windows, progress=False)["text"]
    assert mask.tolist() == [True, False, False, False, True]
    assert emb.tolist() == [[2, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [4, 1, 0]]
    windows.narrations = None  # no narrations at all: nothing has a target
    (emb, mask) = teacher_targets([FakeTeacher()], windows, progress=False)["text"]
    assert not mask.any() and emb.shape == (5, 3)


# ---------------------------------------------------------------- building a run
def distinct_parameters(run) -> int:
    return len({id(p) for p in run.model.parameters()})


def test_build_run_shares_temperatures_unless_per_loss(tmp_path):
    shared = make_run(tmp_path)
    own = make_run(tmp_path, "train.temperatures=per-loss")
    assert distinct_parameters(own) - distinct_parameters(shared) == 2  # nn's two taus
    assert list(shared.model.losses) == ["ss", "mm", "nn"]
    assert shared.model.weights == {"ss": 1.0, "mm": 1.0, "nn": 1.0}
    assert shared.needs_aug and shared.datasets == ["hapt"]
    # the subject split: 64 windows, a tenth of the subjects held out for validation
    assert shared.windows + len(shared.val_source) == 64 and 0 < len(shared.val_source) < 32
    assert len(shared.train_source) == shared.windows
    none = make_run(tmp_path, "data.val_fraction=0")
    assert none.val_source is None and none.windows == 64


def test_build_run_sizes_the_supervised_head_and_moves_labels_only_when_needed(tmp_path):
    run = make_run(tmp_path, recipe="supervised-hapt")
    (loss,) = run.model.losses.values()
    assert loss.classifier.in_features == run.model.encoder.output_sizes["emb"]
    assert not run.needs_aug and run.train_source.labels is not None
    primus = make_run(tmp_path, recipe="primus-hapt")
    assert primus.train_source.labels is None  # no loss needs labels: none are moved


def test_build_encoder_follows_the_teachers_size(tmp_path):
    recipe = resolve_recipe("primus-hapt", TINY).recipe

    class Sized:
        def __init__(self, size):
            self.output_size = size

    assert build_encoder(recipe, [Sized(7)]).output_sizes["mmcl"] == 7
    assert build_encoder(recipe, [Sized(7), Sized(7)]).primus_params["mmcl_dim"] == 7
    fixed = resolve_recipe("primus-hapt", [*TINY, "encoder.mmcl_dim=5"]).recipe
    assert build_encoder(fixed, [Sized(7)]).output_sizes["mmcl"] == 5
    with pytest.raises(PrimusError, match=r"different output sizes \[7, 9\]"):
        build_encoder(recipe, [Sized(9), Sized(7)])


def test_compat_hash_ignores_only_the_resumable_fields():
    base = compat_hash(resolve_recipe("primus-hapt", TINY))
    for setting in (
        "train.max_steps=7",
        "train.device=cpu",
        "train.checkpoint_every=3",
        "train.log_every=2",
        "train.epochs=2",
    ):
        assert compat_hash(resolve_recipe("primus-hapt", [*TINY, setting])) == base, setting
    for setting in ("train.lr=0.5", "train.seed=3", "encoder.hidden_size=8"):
        assert compat_hash(resolve_recipe("primus-hapt", [*TINY, setting])) != base, setting
    # the hash leaves the recipe as it was (recipe.yaml and config.json are written from it)
    loaded = resolve_recipe("primus-hapt", [*TINY, "train.max_steps=7", "train.log_every=3"])
    compat_hash(loaded)
    assert loaded.data["train"]["max_steps"] == 7 and loaded.data["train"]["log_every"] == 3


def test_switches_resolve_the_batch_and_precision():
    def train_switches(*sets, world=1):
        recipe = resolve_recipe("primus-hapt", [*TINY, *sets]).recipe
        return switches(recipe, Ranks(0, world))

    own = train_switches(world=2)["train"]
    assert (own["batch_per_device"], own["global_batch"], own["world_size"]) == (8, 16, 2)
    shared = train_switches("train.batch_size_per=global", world=2)["train"]
    assert (shared["batch_per_device"], shared["global_batch"]) == (4, 8)
    assert train_switches()["train"]["precision"] == "fp32"
    assert train_switches("train.tf32=true")["train"]["precision"] == "tf32"
    assert train_switches("train.amp=true", "train.tf32=true")["train"]["precision"] == "bf16"
    full = train_switches()
    assert [loss["type"] for loss in full["losses"]] == ["ss", "mm", "nn"]
    assert full["losses"][2]["queue_size"] == 16  # the recipe's value with defaults filled in
    assert full["data"]["validation"] is None and full["data"]["val_fraction"] == 0.1
    assert full["data"]["pretrain"][0]["type"] == "hapt"
    # parameters the recipe does not set are recorded with their documented defaults
    assert full["augmentations"] == [
        {"type": "scale-per-timestep", "sigma": 0.25},
        {"type": "permute", "segments": 5},
    ]
    hapt = full["data"]["pretrain"][0]
    assert (hapt["min_fill"], hapt["include_transitions"], hapt["root"]) == (0.5, True, None)


def test_amp_and_step_modes_on_the_cpu(tmp_path):
    assert amp_settings(CPU, True) == (False, None) == amp_settings(CPU, False)
    run = make_run(tmp_path)
    cfg = run.recipe.train
    check_step_mode(cfg, run)  # eager: always fine
    check_step_mode(cfg.model_copy(update={"step": "static"}), run)
    with pytest.raises(PrimusError) as caught:
        check_step_mode(cfg.model_copy(update={"step": "graph"}), run)
    assert str(caught.value) == (
        "train.step=graph captures the step in a CUDA graph; the device is cpu "
        "(use train.step=static there)"
    )
    run.d = Ranks(0, 2)
    with pytest.raises(PrimusError, match=r"^train.step=static runs in one process; use eager"):
        check_step_mode(cfg.model_copy(update={"step": "static"}), run)


# ---------------------------------------------------------------- the trainer
def test_batches_steps_per_epoch_and_total_steps(tmp_path):
    trainer = make_trainer(tmp_path, "data.val_fraction=0", "train.epochs=3")
    assert (trainer.local_batch, trainer.global_batch) == (8, 8)
    assert trainer.steps_per_epoch == 64 // 8 and trainer.total_steps == 3 * 8
    assert make_trainer(tmp_path, "data.val_fraction=0", max_steps=5).total_steps == 5
    capped = make_trainer(tmp_path, "data.val_fraction=0", "train.max_steps=4")
    assert capped.total_steps == 4
    odd = make_trainer(tmp_path, "data.val_fraction=0", "train.batch_size=10", "train.epochs=1")
    assert odd.steps_per_epoch == 6 and odd.total_steps == 6  # the partial batch is dropped
    with pytest.raises(PrimusError) as caught:
        make_trainer(tmp_path, "data.val_fraction=0", "train.batch_size=65")
    assert str(caught.value) == "64 training windows are fewer than one batch of 65"


def as_ranks(run, world: int):
    """The run as rank 0 of ``world`` processes for the batch arithmetic, without a process
    group (so the trainer builds no DDP wrapper)."""

    class NoGroup(Ranks):
        @property
        def enabled(self) -> bool:
            return False

    run.d = NoGroup(0, world)
    return run


def test_the_batch_is_per_process_or_divided_between_processes(tmp_path):
    own = Trainer(as_ranks(make_run(tmp_path, "data.val_fraction=0"), 2), None, progress=False)
    assert (own.local_batch, own.global_batch, own.steps_per_epoch) == (8, 16, 4)
    run = make_run(tmp_path, "data.val_fraction=0", "train.batch_size_per=global")
    shared = Trainer(as_ranks(run, 2), None, progress=False)
    assert (shared.local_batch, shared.global_batch, shared.steps_per_epoch) == (4, 8, 8)
    counts = (shared.local_batch, shared.global_batch, shared.steps_per_epoch, shared.total_steps)
    assert all(type(n) is int for n in counts)  # they slice the epoch order
    run = make_run(tmp_path, "data.val_fraction=0", "train.batch_size_per=global")
    with pytest.raises(PrimusError) as caught:
        Trainer(as_ranks(run, 3), None, progress=False)
    assert str(caught.value) == (
        "train.batch_size=8 (batch_size_per: global) is not divisible by the 3 processes"
    )


def test_warmup_raises_the_learning_rate_linearly(tmp_path):
    trainer = make_trainer(tmp_path, "train.warmup_steps=4", "train.lr=0.02", max_steps=6)
    seen = [trainer.optimizer.param_groups[0]["lr"]]
    for _ in range(5):
        trainer.train_step(torch.arange(8))
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])
    flat = make_trainer(tmp_path, "train.lr=0.02", max_steps=2)
    flat.train_step(torch.arange(8))
    assert flat.optimizer.param_groups[0]["lr"] == pytest.approx(0.02)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_a_train_step_is_one_optimiser_step_on_the_weighted_loss(tmp_path, optimizer):
    sets = ["train.lr=0.01", "train.weight_decay=0.1", f"train.optimizer={optimizer}"]
    trainer = make_trainer(tmp_path, *sets, max_steps=3)
    run = trainer.run
    twin = copy.deepcopy(run.model)
    params = [p for p in twin.parameters() if p.requires_grad]
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    assert type(trainer.optimizer) is kind
    assert trainer.optimizer.defaults["fused"]  # one kernel per step; same steps as the loop
    opt = kind(params, lr=0.01, weight_decay=0.1, foreach=False)
    gen = torch.Generator().manual_seed(run.recipe.train.seed)  # the trainer's rank-0 stream
    for step in range(2):
        idx = torch.arange(8 * step, 8 * step + 8)
        x, teachers, masks, labels = run.train_source.batch(idx)
        x_aug = x
        for aug in run.augmentations:
            x_aug = aug(x_aug, gen)
        total, terms = twin(x, x_aug, teachers, masks, labels, gather=False)
        opt.zero_grad()
        total.backward()
        opt.step()
        values = trainer.train_step(idx)
        assert values["loss"] == pytest.approx(float(total.detach()), rel=1e-5)
        assert values["ss"] == pytest.approx(float(terms["ss"]), rel=1e-5)
        assert set(values) == {"loss", *terms}
        for (name, mine), theirs in zip(
            run.model.named_parameters(), twin.parameters(), strict=True
        ):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_the_loop_visits_each_epoch_in_order_logs_and_checkpoints(tmp_path):
    trainer = make_trainer(
        tmp_path,
        "data.val_fraction=0",
        "train.log_every=3",
        "train.checkpoint_every=5",
        "train.epochs=2",
    )
    assert trainer.total_steps == 16 and trainer.steps_per_epoch == 8
    batches, saved_at, epochs_ended = [], [], []
    real_step, real_save = trainer.train_step, trainer.save

    def step(idx):
        batches.append(idx.clone())
        return real_step(idx)

    def save():
        saved_at.append(trainer.step)
        real_save()

    def end_of_epoch(metrics):
        epochs_ended.append(trainer.step)
        type(trainer).end_of_epoch(trainer, metrics)

    trainer.train_step, trainer.save, trainer.end_of_epoch = step, save, end_of_epoch
    with open(tmp_path / "run" / "metrics.jsonl", "a") as metrics:
        assert trainer.run_loop(metrics) is None
    assert len(batches) == 16 and all(len(b) == 8 for b in batches)
    for epoch in (0, 1):
        order = epoch_order(64, trainer.cfg.seed, epoch, Ranks())
        assert torch.equal(torch.cat(batches[8 * epoch : 8 * epoch + 8]), order)
    assert epochs_ended == [8, 16] and trainer.epoch == 2 and trainer.batch_in_epoch == 0
    assert saved_at == [5, 10, 15]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "loss" in r]
    assert logged == [1, 3, 6, 9, 12, 15]
    assert [r["epoch"] for r in rows if "loss" in r] == [0, 0, 0, 1, 1, 1]
    assert [r["step"] for r in rows if "val_loss" in r] == [8, 16]
    assert trainer.metrics_rows == len(rows) == 8
    assert len(trainer.losses) == 16
    assert rows[0]["loss"] == pytest.approx(trainer.losses[0])
    assert rows[0]["lr"] == pytest.approx(1e-3) and rows[0]["windows_per_s"] > 0
    assert {"ss", "mm", "nn"} <= set(rows[0])


def test_the_loop_stops_after_the_step_a_signal_arrives_in(tmp_path):
    trainer = make_trainer(tmp_path, "data.val_fraction=0", "train.epochs=2")
    real_step = trainer.train_step

    def step(idx):
        if trainer.step == 2:  # during the third step
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(idx)

    trainer.train_step = step
    before = signal.getsignal(signal.SIGTERM)
    with open(os.devnull, "w") as metrics:
        assert trainer.run_loop(metrics) == "SIGTERM"
    assert trainer.step == 3 and trainer.batch_in_epoch == 3 and trainer.epoch == 0
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_the_loop_stops_at_max_steps_in_the_middle_of_an_epoch(tmp_path):
    trainer = make_trainer(tmp_path, "data.val_fraction=0", "train.log_every=2", max_steps=5)
    assert trainer.steps_per_epoch == 8
    with open(tmp_path / "run" / "metrics.jsonl", "a") as metrics:
        assert trainer.run_loop(metrics) is None
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (5, 0, 5)
    assert len(trainer.losses) == 5


def test_one_process_never_gathers_even_when_gather_negatives_is_set(tmp_path):
    """`train.gather_negatives` applies under torch.distributed only: one process trains on its
    own batch (no process group is needed) and takes the same step as without the switch."""
    steps = {}
    for value in ("true", "false"):
        trainer = make_trainer(tmp_path, f"train.gather_negatives={value}", max_steps=2)
        steps[value] = [trainer.train_step(torch.arange(8 * i, 8 * i + 8))["loss"] for i in (0, 1)]
    assert steps["true"] == pytest.approx(steps["false"], rel=1e-6)


def test_the_static_step_gives_the_eager_losses_and_floats_in_the_history(tmp_path):
    """train.step=static (one process, fixed shapes, no host sync per step) runs the same
    optimisation: the loss history equals the eager loop's, read back as floats."""
    histories = {}
    for mode in ("eager", "static"):
        trainer = make_trainer(
            tmp_path, "data.val_fraction=0", "train.log_every=3", f"train.step={mode}", max_steps=4
        )
        assert (trainer.static_step is None) == (mode == "eager")
        with open(os.devnull, "w") as metrics:
            trainer.run_loop(metrics)
        # read back when logged (steps 1 and 3): the static step keeps step 4 on the device
        assert all(type(v) is float for v in trainer.losses[:3]), mode
        assert isinstance(trainer.losses[3], torch.Tensor) == (mode == "static")
        trainer.read_losses()
        assert all(type(v) is float for v in trainer.losses)
        histories[mode] = trainer.losses
    assert histories["static"] == pytest.approx(histories["eager"], rel=1e-4)


def test_an_eager_loop_stops_at_the_step_whose_loss_is_not_finite(tmp_path):
    trainer = make_trainer(tmp_path, "data.val_fraction=0", "train.log_every=10", max_steps=8)
    real_step = trainer.train_step

    def step(idx):
        values = real_step(idx)
        return {**values, "loss": float("nan")} if trainer.step == 2 else values

    trainer.train_step = step
    with open(os.devnull, "w") as metrics, pytest.raises(PrimusError, match="at step 3;"):
        trainer.run_loop(metrics)  # not at the next log row (step 10)
    assert trainer.step == 3


def test_windows_per_second_is_the_windows_since_the_last_row_over_the_time_since(
    tmp_path, monkeypatch, caplog
):
    from primus_core.training import trainer as trainer_module

    ticks = iter(range(0, 100, 2))  # a clock that advances 2 s per reading
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    trainer = make_trainer(tmp_path, "data.val_fraction=0", "train.log_every=3", max_steps=6)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as metrics, caplog.at_level("INFO"):
        trainer.run_loop(metrics)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # step 1: 8 windows in 2 s; steps 2-3: 16 windows in 2 s; steps 4-6: 24 windows in 2 s
    assert [(r["step"], r["windows_per_s"]) for r in rows] == [(1, 4.0), (3, 8.0), (6, 12.0)]
    # without a progress bar each row is also a log line
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(":")[0] for line in lines] == [
        "step 1 epoch 0",
        "step 3 epoch 0",
        "step 6 epoch 0",
    ]
    assert lines[0].endswith(", 4 windows/s") and "loss " in lines[0]


def test_tensorboard_needs_its_package_and_says_so(tmp_path):
    run = make_run(tmp_path)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(PrimusError, match=r"needs the tensorboard package \(pip install"):
            Trainer(run, 2, progress=False, tensorboard=True)
    else:
        assert Trainer(run, 2, progress=False, tensorboard=True).tb is not None
    assert Trainer(run, 2, progress=False).tb is None


def test_stop_request_records_the_signal_and_restores_the_handlers():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopRequest() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == "SIGINT"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_read_losses_turns_tensors_into_floats_and_stops_at_the_first_non_finite(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=10)
    trainer.losses = [1.0, torch.tensor(2.0), torch.tensor(3.5)]
    trainer.step = 3
    trainer.read_losses()
    assert trainer.losses == [1.0, 2.0, 3.5] and all(type(v) is float for v in trainer.losses)
    trainer.losses = [1.0, 2.0, torch.tensor(1.0), torch.tensor(float("inf")), torch.tensor(2.0)]
    trainer.step = 9  # the history holds steps 5..9
    with pytest.raises(PrimusError) as caught:
        trainer.read_losses()
    assert str(caught.value) == "loss became inf at step 8; lower train.lr or disable amp"
    trainer.losses = [1.0, float("nan")]
    trainer.step = 2
    with pytest.raises(PrimusError, match=r"^loss became nan at step 2;"):
        trainer.read_losses()
    trainer.losses = [float("nan"), 1.0]  # checked when it was read: not raised again
    trainer.read_losses()
    for losses, step, bad in [
        ([torch.tensor(float("nan")), torch.tensor(1.0)], 2, 1),  # the first pending, at 0
        ([1.0, torch.tensor(float("nan")), torch.tensor(1.0)], 7, 6),  # the first pending, at 1
    ]:
        trainer.losses, trainer.step = losses, step
        with pytest.raises(PrimusError, match=rf"^loss became nan at step {bad};"):
            trainer.read_losses()


@pytest.mark.parametrize("fraction, held_out", [(0.5, 26), (0.4, 24), (0.3, 15)])
def test_validation_is_the_mean_loss_of_whole_batches_and_leaves_the_queues(
    tmp_path, fraction, held_out
):
    trainer = make_trainer(tmp_path, f"data.val_fraction={fraction}", max_steps=4)
    run = trainer.run
    for i in range(2):
        trainer.train_step(torch.arange(8 * i, 8 * i + 8))  # fill the NN queues a little
    queues = copy.deepcopy(run.model.losses.state_dict())
    weights = copy.deepcopy(run.model.state_dict())
    n = len(run.val_source)
    assert n == held_out  # whole batches and a partial one, exactly whole batches, 8k - 1
    got = trainer.validate()
    # the oracle: each whole batch in eval mode, augmented with a fresh seed+1 generator
    twin = copy.deepcopy(run.model).eval()
    gen = torch.Generator().manual_seed(run.recipe.train.seed + 1)
    values = []
    with torch.no_grad():
        for start in range(0, n - 7, 8):
            x, teachers, masks, labels = run.val_source.batch(torch.arange(start, start + 8))
            x_aug = x
            for aug in run.augmentations:
                x_aug = aug(x_aug, gen)
            values.append(float(twin(x, x_aug, teachers, masks, labels, gather=False)[0]))
    assert len(values) == n // 8
    assert got == pytest.approx(sum(values) / len(values), rel=1e-5)
    for key, value in run.model.state_dict().items():  # queues and weights as they were
        assert torch.equal(value, weights[key]), key
    assert all(torch.equal(v, queues[k]) for k, v in run.model.losses.state_dict().items())
    assert run.model.training
    assert trainer.validate() == pytest.approx(got, rel=1e-6)  # the same windows, the same draw
    assert make_trainer(tmp_path, "data.val_fraction=0", max_steps=2).validate() is None


def test_the_model_folder_holds_the_best_validation_so_far(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=10)
    model_config = tmp_path / "run" / "model" / "config.json"
    scores = iter([3.0, 2.0, 2.5, None, 1.5])
    trainer.validate = lambda: next(scores)
    with open(tmp_path / "run" / "metrics.jsonl", "w") as metrics:
        trainer.step = 1
        trainer.after_validation(metrics)
        assert trainer.best_val == 3.0 and model_config.exists()
        trainer.step = 2
        trainer.after_validation(metrics)
        assert trainer.best_val == 2.0
        assert json.loads(model_config.read_text())["validation"] == {"loss": 2.0, "step": 2}
        trainer.step = 3
        trainer.after_validation(metrics)  # worse: the folder keeps step 2
        assert trainer.best_val == 2.0
        assert json.loads(model_config.read_text())["validation"] == {"loss": 2.0, "step": 2}
        trainer.losses = [5.0, 0.5, 1.5]  # no validation loss: the last training loss is the score
        trainer.step = 4
        trainer.after_validation(metrics)
        assert trainer.best_val == 1.5
        assert json.loads(model_config.read_text())["validation"] == {"loss": 1.5, "step": 4}
        trainer.step = 5
        trainer.after_validation(metrics)  # a tie is no improvement: the folder keeps step 4
        assert json.loads(model_config.read_text())["validation"] == {"loss": 1.5, "step": 4}
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [
        {"step": 1, "epoch": 0, "val_loss": 3.0},
        {"step": 2, "epoch": 0, "val_loss": 2.0},
        {"step": 3, "epoch": 0, "val_loss": 2.5},
        {"step": 4, "epoch": 0, "val_loss": None},
        {"step": 5, "epoch": 0, "val_loss": 1.5},
    ]
    config = json.loads(model_config.read_text())
    assert config["training"]["steps"] == 4 and config["training"]["windows"] == trainer.run.windows
    assert config["training"]["global_batch"] == 8 and config["training_data"] == ["hapt"]
    assert config["teachers"] == [t.identity for t in trainer.run.teachers]


def test_state_and_restore_round_trip_every_counter(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=10)
    trainer.train_step(torch.arange(8))
    trainer.step, trainer.epoch, trainer.batch_in_epoch, trainer.best_val = 1, 0, 1, 0.5
    trainer.losses, trainer.metrics_rows = [2.0], 1
    state = copy.deepcopy(trainer.state())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (1, 0, 1)
    assert state["best_val"] == 0.5 and state["metrics_rows"] == 1
    assert state["compat"] == trainer.compat == compat_hash(trainer.run.loaded) != ""
    expected_aug = trainer.aug_gen.get_state()
    other = make_trainer(tmp_path, max_steps=10)
    torch.manual_seed(123)
    other.aug_gen.manual_seed(99)
    other.restore(state)
    assert (other.step, other.epoch, other.batch_in_epoch, other.best_val) == (1, 0, 1, 0.5)
    assert other.losses == [2.0] and other.losses is not state["losses_history"]
    assert torch.equal(other.aug_gen.get_state(), expected_aug)
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    for key, value in trainer.run.model.state_dict().items():
        assert torch.equal(other.run.model.state_dict()[key], value), key
    assert other.scheduler.state_dict()["last_epoch"] == 1
    wrong = make_trainer(tmp_path, "encoder.hidden_size=8", max_steps=10)
    with pytest.raises(PrimusError, match=r"^checkpoint does not fit this model: "):
        wrong.restore(state)


def test_a_cpu_trainer_keeps_freed_memory_for_reuse(tmp_path, monkeypatch):
    """The CPU training step's large buffers come back from glibc's heap, not as fresh pages
    (primus_core.device.reuse_freed_memory; its effect is tested in test_device_memory.py)."""
    import primus_core.training.trainer as module

    calls = []
    monkeypatch.setattr(module, "reuse_freed_memory", lambda: calls.append(1) or True)
    make_trainer(tmp_path)
    assert calls == [1]
