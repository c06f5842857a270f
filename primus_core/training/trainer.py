"""The pretraining loop: one process (CPU or GPU) or torch.distributed (torchrun, DDP).

A run directory holds: recipe.yaml (resolved), env.json, metrics.jsonl, checkpoint.pt (all
state, for --resume) and model/ (the best encoder as a model directory, ready for zoo push).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..components import provenance
from ..config import Recipe
from ..data.shard import Ranks
from ..device import resolve_device, reuse_freed_memory
from ..errors import PrimusError
from ..paths import write_json
from ..registry.recipes import (
    LoadedRecipe,
    build_component,
    check_recipe,
    component_refs,
    data_hash,
    resolve_recipe,
)
from ..version import __version__
from ..zoo.modeldir import model_card, save_model_dir
from .batch import StepBatch
from .checkpoint import load_checkpoint, prepare_run_dir, save_checkpoint, trim_metrics

log = logging.getLogger("primus.train")
# fields that may differ between an interrupted run and its resumption
RESUMABLE_FIELDS = ("max_steps", "device", "checkpoint_every", "log_every", "epochs")


# ---------------------------------------------------------------- distributed
Dist = Ranks  # this process's place in the torchrun job (rank 0 of 1 without torchrun)


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0; gradients flow back to every rank's slice."""
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)


def gather_plain(tensor: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


# ---------------------------------------------------------------- the model being trained
class Pretrainer(nn.Module):
    """The encoder and the losses (which may own parameters and buffers): what DDP wraps."""

    def __init__(self, encoder: nn.Module, losses: dict[str, nn.Module], weights: dict[str, float]):
        super().__init__()
        self.encoder = encoder
        self.losses = nn.ModuleDict(losses)
        self.weights = weights

    def forward(
        self,
        x: torch.Tensor,
        x_aug: torch.Tensor | None,
        teachers: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        labels: torch.Tensor | None,
        gather: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views = x if x_aug is None else torch.cat([x, x_aug])
        out = self.encoder(views)
        imu = {k: v[: len(x)] for k, v in out.items()}
        imu_aug = None if x_aug is None else {k: v[len(x) :] for k, v in out.items()}
        if gather:
            imu = {k: gather_with_grad(v) for k, v in imu.items()}
            imu_aug = (
                None if imu_aug is None else {k: gather_with_grad(v) for k, v in imu_aug.items()}
            )
            teachers = {k: gather_plain(v) for k, v in teachers.items()}
            masks = {k: gather_plain(v) for k, v in masks.items()}
            labels = None if labels is None else gather_plain(labels)
        batch = StepBatch(
            imu=imu,
            imu_aug=imu_aug,
            teachers=teachers,
            teacher_mask=masks,
            labels=labels,
            gathered=gather,
        )
        total = torch.zeros((), device=x.device)
        terms: dict[str, torch.Tensor] = {}
        for name, loss in self.losses.items():
            value, parts = loss(batch)
            total = total + self.weights[name] * value.float()
            terms[name] = value.detach()
            terms.update({f"{name}/{k}": v.detach() for k, v in parts.items()})
        return total, terms


# ---------------------------------------------------------------- data on the device
class BatchSource:
    """Training arrays and the per-window teacher targets; batches by index on the device.
    Small sets live on the GPU whole; larger ones go through pinned memory."""

    def __init__(
        self,
        imu: np.ndarray,
        targets: dict[str, tuple[torch.Tensor, torch.Tensor]],
        labels: np.ndarray | None,
        device: torch.device,
        resident_bytes: int = 4 << 30,
    ):
        self.device = device
        self.resident = device.type == "cuda" and imu.nbytes <= resident_bytes
        with warnings.catch_warnings():  # a read-only memory map: only read (batches index it)
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            self.imu = torch.from_numpy(np.ascontiguousarray(imu))
        if self.resident:
            self.imu = self.imu.to(device)
        self.targets = {m: (e.to(device), k.to(device)) for m, (e, k) in targets.items()}
        self.labels = (
            None if labels is None else torch.from_numpy(labels.astype(np.int64)).to(device)
        )

    def __len__(self) -> int:
        return len(self.imu)

    def imu_batch(self, idx: torch.Tensor) -> torch.Tensor:
        if self.resident:
            return self.imu[idx]
        batch = self.imu[idx.cpu()]
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def batch(self, idx: torch.Tensor):
        on_device = idx.to(self.device)
        teachers = {m: e[on_device] for m, (e, _) in self.targets.items()}
        masks = {m: k[on_device] for m, (_, k) in self.targets.items()}
        labels = None if self.labels is None else self.labels[on_device]
        return self.imu_batch(on_device if self.resident else idx), teachers, masks, labels


def epoch_order(n: int, seed: int, epoch: int, d: Dist) -> torch.Tensor:
    """This rank's indices for one epoch: a seeded permutation, split across ranks like
    DistributedSampler (rank::world), truncated to a whole number of global batches."""
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g)
    usable = (n // d.world) * d.world
    return perm[:usable][d.rank :: d.world]


# ---------------------------------------------------------------- building a run
@dataclass
class Run:
    loaded: LoadedRecipe
    out: Path
    device: torch.device
    d: Dist
    model: Pretrainer
    augmentations: list[Any]
    teachers: list[Any]
    train_source: BatchSource
    val_source: BatchSource | None
    datasets: list[str]
    needs_aug: bool
    windows: int

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe


def compat_hash(loaded: LoadedRecipe) -> str:
    """The recipe's hash without the fields that may change when a run is resumed."""
    data = copy.deepcopy(loaded.data)
    for key in RESUMABLE_FIELDS:
        (data.get("train") or {}).pop(key, None)
    return data_hash(data)


def build_encoder(recipe: Recipe, teachers: list[Any]) -> nn.Module:
    """The recipe's encoder; its mmcl head follows the teachers' size unless set explicitly."""
    extra: dict[str, Any] = {}
    sizes = {t.output_size for t in teachers}
    if len(sizes) > 1:
        raise PrimusError(
            f"teachers have different output sizes {sorted(sizes)}; "
            "the mmcl head can match only one"
        )
    if sizes and "mmcl_dim" not in recipe.encoder.params:
        extra["mmcl_dim"] = sizes.pop()
    encoder = build_component("encoder", recipe.encoder, "encoder", **extra)
    encoder.primus_params = {**recipe.encoder.params, **extra}
    return encoder


def load_data(recipe: Recipe, contract):
    from ..data.windows import concat_windows, load_windows

    if not recipe.data.pretrain:
        raise PrimusError(f"recipe '{recipe.name}' names no pretraining data (data.pretrain)")
    sets = [load_windows(ref, contract) for ref in recipe.data.pretrain]
    windows = sets[0] if len(sets) == 1 else concat_windows(sets, contract)
    return select_corpus(
        windows, recipe.data.include_classes, recipe.data.max_windows, recipe.train.seed
    )


def select_corpus(windows, classes: list[str] | None, max_windows: int | None, seed: int):
    """The windows of some classes, then a seeded subset of at most ``max_windows``."""
    keep = np.arange(len(windows.imu))
    if classes is not None:
        unknown = sorted(set(classes) - set(windows.class_names))
        if unknown:
            raise PrimusError(
                f"data.include_classes: unknown classes {unknown}; the data has "
                f"{windows.class_names}"
            )
        wanted = [windows.class_names.index(c) for c in classes]
        keep = keep[np.isin(windows.labels, wanted)]
    if max_windows is not None and max_windows < len(keep):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(keep, size=max_windows, replace=False))
    return windows if len(keep) == len(windows.imu) else windows.subset(keep)


def teacher_targets(
    teachers: list[Any], windows, progress: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """modality -> ((N, D) embeddings, (N,) mask) from the teacher-embedding cache. A window has
    no target (mask False) when it has no input (no narration, no video file) or when its input
    was skipped by the teacher (an unreadable video under skip_bad_videos)."""
    from ..data.cache import EmbeddingCache, teacher_has_input

    cache = EmbeddingCache(progress=progress)
    targets = {}
    n = len(windows.imu)
    for teacher in teachers:
        inputs = windows.narrations if teacher.modality == "text" else windows.videos
        inputs = [None] * n if inputs is None else inputs
        present = [i for i, item in enumerate(inputs) if teacher_has_input(teacher, item)]
        full = torch.zeros(n, teacher.output_size)
        mask = torch.zeros(n, dtype=torch.bool)
        if present:
            emb = cache.get_or_compute(teacher, [inputs[i] for i in present], batch_size=256)
            ok = torch.isfinite(emb).all(dim=1)
            rows = torch.tensor(present)[ok]
            full[rows] = emb[ok]
            mask[rows] = True
        targets[teacher.modality] = (full, mask)
        log.info(
            "teacher %s: %d of %d windows have %s (%d without, %d skipped as unreadable)",
            teacher.identity,
            int(mask.sum()),
            n,
            teacher.modality,
            n - len(present),
            len(present) - int(mask.sum()),
        )
    return targets


def share_temperatures(losses: dict[str, nn.Module]) -> dict[str, list[str]]:
    """The reference's temperatures: every InfoNCE of one role (``multimodal``,
    ``self-supervised``; a loss names its own in ``infonce_slots``) becomes the first loss's
    module of that role, so each role learns one tau. Returns role -> the users, for the record."""
    owners: dict[str, nn.Module] = {}
    users: dict[str, list[str]] = {}
    for name, loss in losses.items():
        for role, attribute in (getattr(loss, "infonce_slots", None) or {}).items():
            if role in owners:
                setattr(loss, attribute, owners[role])
            else:
                owners[role] = getattr(loss, attribute)
            users.setdefault(role, []).append(f"{name}.{attribute}")
    return users


def component_config(kind: str, ref) -> dict[str, Any]:
    """A recipe component's parameters with every default filled in (what actually ran)."""
    from ..components import get_component

    config = get_component(kind, ref.type).config.model_validate(ref.params)
    return {"type": ref.type, **config.model_dump(mode="json")}


def switches(recipe: Recipe, d: Dist) -> dict[str, Any]:
    """Every setting that docs/fidelity.md lists, resolved with defaults: the training switches,
    each loss's and augmentation's full parameters and each dataset's (recorded in the run
    directory as switches.json and in the model's config.json)."""
    cfg = recipe.train
    per_device = cfg.batch_size if cfg.batch_size_per == "device" else cfg.batch_size // d.world
    return {
        "train": {
            "batch_size": cfg.batch_size,
            "batch_size_per": cfg.batch_size_per,
            "batch_per_device": per_device,
            "global_batch": per_device * d.world,
            "world_size": d.world,
            "gather_negatives": cfg.gather_negatives,
            "amp": cfg.amp,
            "tf32": cfg.tf32,
            "precision": "bf16" if cfg.amp else ("tf32" if cfg.tf32 else "fp32"),
            "temperatures": cfg.temperatures,
        },
        "losses": [component_config("loss", ref) for ref in recipe.losses],
        "augmentations": [component_config("augmentation", ref) for ref in recipe.augmentations],
        "data": {
            "pretrain": [component_config("dataset", ref) for ref in recipe.data.pretrain],
            "validation": None
            if recipe.data.validation is None
            else [component_config("dataset", ref) for ref in recipe.data.validation],
            "val_fraction": recipe.data.val_fraction,
        },
    }


def build_run(
    loaded: LoadedRecipe, out: Path, device: torch.device, d: Dist, progress: bool
) -> Run:
    from ..data.windows import split_by_subject

    recipe = loaded.recipe
    torch.manual_seed(recipe.train.seed)
    teachers = [
        build_component("teacher", ref, f"teachers.{i}") for i, ref in enumerate(recipe.teachers)
    ]
    encoder = build_encoder(recipe, teachers)
    losses, weights = {}, {}
    for i, ref in enumerate(recipe.losses):
        name = ref.type if ref.type not in losses else f"{ref.type}.{i}"
        extra = {}
        if ref.type == "supervised" and "in_features" not in ref.params:
            extra["in_features"] = encoder.output_sizes[ref.params.get("head", "emb")]
        losses[name] = build_component("loss", ref, f"losses.{i}", **extra)
        weights[name] = ref.weight
    if not losses:
        raise PrimusError(f"recipe '{recipe.name}' has no losses")
    if recipe.train.temperatures == "shared":
        share_temperatures(losses)
    augs = [
        build_component("augmentation", ref, f"augmentations.{i}")
        for i, ref in enumerate(recipe.augmentations)
    ]
    needs_aug = any(getattr(loss, "needs_augmented_view", False) for loss in losses.values())
    windows = load_data(recipe, encoder.imu_contract)
    targets = teacher_targets(teachers, windows, progress and d.main)
    needs_labels = any(getattr(loss, "needs_labels", False) for loss in losses.values())
    labels = windows.labels if needs_labels else None
    if needs_labels and (labels is None or (labels < 0).all()):
        raise PrimusError("a loss needs labels but the pretraining data has none")
    val_source = None
    if recipe.data.validation is not None:  # a separate validation set (an official val split)
        train_idx, val_idx = np.arange(len(windows.imu)), np.array([], dtype=np.int64)
        val_source = validation_source(recipe, teachers, encoder, needs_labels, device, progress)
    elif recipe.data.val_fraction > 0:
        train_idx, val_idx = split_by_subject(windows, recipe.data.val_fraction, recipe.train.seed)
    else:
        train_idx, val_idx = np.arange(len(windows.imu)), np.array([], dtype=np.int64)

    def source(idx: np.ndarray) -> BatchSource:
        sub_targets = {m: (e[idx], k[idx]) for m, (e, k) in targets.items()}
        return BatchSource(
            windows.imu[idx], sub_targets, None if labels is None else labels[idx], device
        )

    if len(val_idx):
        val_source = source(val_idx)

    model = Pretrainer(encoder, losses, weights).to(device)
    return Run(
        loaded,
        out,
        device,
        d,
        model,
        augs,
        teachers,
        source(train_idx),
        val_source,
        datasets=[ref.type for ref in recipe.data.pretrain],
        needs_aug=needs_aug,
        windows=len(train_idx),
    )


def validation_source(
    recipe: Recipe, teachers: list[Any], encoder: nn.Module, needs_labels: bool, device, progress
) -> BatchSource | None:
    """The windows of data.validation with their teacher targets (None when it is empty)."""
    from ..data.windows import concat_windows, load_windows

    contract = encoder.imu_contract
    sets = [load_windows(ref, contract) for ref in recipe.data.validation or []]
    if not sets:
        return None
    windows = sets[0] if len(sets) == 1 else concat_windows(sets, contract)
    if len(windows.imu) == 0:
        return None
    targets = teacher_targets(teachers, windows, progress)
    return BatchSource(windows.imu, targets, windows.labels if needs_labels else None, device)


# ---------------------------------------------------------------- the loop
def amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype | None]:
    if not enabled or device.type != "cuda":
        return False, None
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_optimizer(
    params, kind: str, lr: float, weight_decay: float, device: torch.device, graph: bool
) -> torch.optim.Optimizer:
    """Adam or AdamW, fused into one kernel per step (on a CPU about 5x faster than the
    per-tensor loop: 0.8 vs 4.4 ms for PRIMUS's 19 tensors). A step captured in a CUDA graph
    reads the learning rate and the step count from device tensors instead (capturable)."""
    opt_cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    if graph:
        lr_tensor = torch.tensor(lr, device=device)
        return opt_cls(params, lr=lr_tensor, weight_decay=weight_decay, capturable=True)
    return opt_cls(params, lr=lr, weight_decay=weight_decay, fused=True)


def check_step_mode(cfg, run: Run) -> None:
    """train.step static/graph: one process, no fp16 loss scaling; graph needs CUDA."""
    if cfg.step == "eager":
        return
    if run.d.enabled:
        raise PrimusError(f"train.step={cfg.step} runs in one process; use eager under torchrun")
    if cfg.step == "graph" and run.device.type != "cuda":
        raise PrimusError(
            f"train.step=graph captures the step in a CUDA graph; the device is {run.device} "
            "(use train.step=static there)"
        )
    if amp_settings(run.device, cfg.amp)[1] == torch.float16:
        raise PrimusError(f"train.step={cfg.step} does not support fp16 loss scaling")


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class TrainResult:
    out: Path
    model_dir: Path | None
    steps: int
    best_val_loss: float | None
    interrupted: str | None
    losses: list[float]


class Trainer:
    def __init__(self, run: Run, max_steps: int | None, progress: bool, tensorboard: bool = False):
        self.run = run
        cfg = run.recipe.train
        self.cfg = cfg
        self.max_steps = max_steps or cfg.max_steps
        self.progress = progress and run.d.main
        self.device = run.device
        if run.device.type == "cpu":
            reuse_freed_memory()
        self.model: nn.Module = run.model
        if run.d.enabled:
            ids = [run.device.index] if run.device.type == "cuda" else None
            # the NN queues are identical on every rank already: no buffer broadcast
            self.model = nn.parallel.DistributedDataParallel(
                run.model, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False
            )
        self.forward_model = self.model
        if cfg.compile:
            self.forward_model = torch.compile(self.model)
        params = [p for p in run.model.parameters() if p.requires_grad]
        graph = cfg.step == "graph"
        check_step_mode(cfg, run)
        self.optimizer = build_optimizer(
            params, cfg.optimizer, cfg.lr, cfg.weight_decay, run.device, graph
        )
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        self.use_amp, self.amp_dtype = amp_settings(run.device, cfg.amp)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )
        self.aug_gen = torch.Generator(device=run.device).manual_seed(cfg.seed + 7919 * run.d.rank)
        self.static_step = None
        if cfg.step != "eager":
            from .static_step import StaticStep

            self.static_step = StaticStep(
                self.forward_model, self.optimizer, run.device, self.amp_dtype, graph
            )
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_val: float | None = None
        self.losses: list[float] = []
        self.metrics_rows = 0  # rows this run's metrics.jsonl holds (saved in checkpoints)
        self.compat = compat_hash(run.loaded)
        self.tb = self._tensorboard() if tensorboard and run.d.main else None
        if cfg.batch_size_per == "device":  # the reference: batch_size windows per process
            self.local_batch = cfg.batch_size
        elif cfg.batch_size % run.d.world:
            raise PrimusError(
                f"train.batch_size={cfg.batch_size} (batch_size_per: global) is not divisible "
                f"by the {run.d.world} processes"
            )
        else:
            self.local_batch = cfg.batch_size // run.d.world
        self.global_batch = self.local_batch * run.d.world
        self.steps_per_epoch = (len(run.train_source) // run.d.world) // self.local_batch
        if self.steps_per_epoch == 0:
            raise PrimusError(
                f"{len(run.train_source)} training windows are fewer than one batch "
                f"of {self.global_batch}"
            )
        self.total_steps = self.max_steps or cfg.epochs * self.steps_per_epoch

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PrimusError(
                "--tensorboard needs the tensorboard package (pip install tensorboard)"
            ) from None
        return SummaryWriter(str(self.run.out / "tensorboard"))

    # -------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        self.read_losses()
        rng = {"torch": torch.get_rng_state(), "aug": self.aug_gen.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "compat": self.compat,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_val": self.best_val,
            "losses_history": self.losses,
            "metrics_rows": self.metrics_rows,
            "model": self.run.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.run.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise PrimusError(f"checkpoint does not fit this model: {str(exc)[:200]}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.aug_gen.set_state(state["rng"]["aug"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch, self.best_val = state["batch_in_epoch"], state["best_val"]
        self.losses = list(state["losses_history"])

    def save(self) -> None:
        if self.run.d.main:
            save_checkpoint(self.state(), self.run.out / "checkpoint.pt")
        if self.run.d.enabled:
            dist.barrier()

    # -------------------------------------------------- steps
    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for aug in self.run.augmentations:
            x = aug(x, gen)
        return x

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        x, teachers, masks, labels = self.run.train_source.batch(idx)
        x_aug = self.augment(x, self.aug_gen) if self.run.needs_aug else None
        if self.static_step is not None:  # no host sync: the loop reads the values in bulk
            values = self.static_step(x, x_aug, teachers, masks, labels)
            self.scheduler.step()
            return {k: v.clone() for k, v in values.items()}
        gather = self.run.d.enabled and self.cfg.gather_negatives
        # the last step's gradients freed before the forward pass, not after it: their blocks
        # are then free for its activations (10-20 MiB less peak at batch 256 on a CPU)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            total, terms = self.forward_model(x, x_aug, teachers, masks, labels, gather)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values = {"loss": float(total.detach())}
        values.update({k: float(v) for k, v in terms.items()})
        return values

    @torch.no_grad()
    def validate(self) -> float | None:
        source = self.run.val_source
        if source is None:
            return None
        saved = copy.deepcopy(self.run.model.losses.state_dict())  # the NN queues must not move
        self.run.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1)
        total, count = 0.0, 0
        bs = self.cfg.batch_size
        for start in range(0, len(source) - bs + 1, bs):
            idx = torch.arange(start, start + bs)
            x, teachers, masks, labels = source.batch(idx)
            x_aug = self.augment(x, gen) if self.run.needs_aug else None
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                loss, _ = self.run.model(x, x_aug, teachers, masks, labels, gather=False)
            total += float(loss) * bs
            count += bs
        self.run.model.losses.load_state_dict(saved)
        self.run.model.train()
        if count == 0:
            return None
        return total / count

    def run_loop(self, metrics) -> str | None:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        seen, tick = 0, time.perf_counter()
        with StopRequest() as stop:
            while self.step < self.total_steps:
                order = epoch_order(
                    len(self.run.train_source), self.cfg.seed, self.epoch, self.run.d
                )
                while self.batch_in_epoch < self.steps_per_epoch and self.step < self.total_steps:
                    b = self.batch_in_epoch
                    values = self.train_step(
                        order[b * self.local_batch : (b + 1) * self.local_batch]
                    )
                    self.step += 1
                    self.batch_in_epoch += 1
                    self.losses.append(values["loss"])
                    seen += self.global_batch
                    log_now = self.step % self.cfg.log_every == 0 or self.step == 1
                    if self.static_step is None or log_now:
                        self.read_losses()
                        values = {k: float(v) for k, v in values.items()}
                    if log_now:
                        now = time.perf_counter()
                        rate = seen / max(now - tick, 1e-9)
                        seen, tick = 0, now
                        self.log(
                            metrics,
                            {
                                "step": self.step,
                                "epoch": self.epoch,
                                **values,
                                "lr": float(self.scheduler.get_last_lr()[0]),
                                "windows_per_s": round(rate, 1),
                            },
                        )
                        bar.set_postfix(
                            {k: f"{v:.3f}" for k, v in values.items() if "/" not in k}
                            | {"win/s": f"{rate:.0f}"}
                        )
                        if not self.progress and self.run.d.main:  # no bar: the loss in the log
                            log.info(
                                "step %d epoch %d: %s, %.0f windows/s",
                                self.step,
                                self.epoch,
                                ", ".join(
                                    f"{k} {v:.4f}" for k, v in values.items() if "/" not in k
                                ),
                                rate,
                            )
                    bar.update(1)
                    if self.step % self.cfg.checkpoint_every == 0:
                        self.read_losses()
                        self.save()
                    if stop.requested:
                        break
                if stop.requested:
                    break
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.end_of_epoch(metrics)
        bar.close()
        return stop.requested

    def read_losses(self) -> None:
        """Turn the losses still held as device tensors (static step) into floats, in one
        transfer, and stop at the first that is not finite."""
        pending = [i for i, v in enumerate(self.losses) if isinstance(v, torch.Tensor)]
        if pending:
            values = torch.stack([self.losses[i] for i in pending]).tolist()
            for i, value in zip(pending, values, strict=True):
                self.losses[i] = value
        first_step = self.step - len(self.losses) + 1
        start = pending[0] if pending else len(self.losses) - 1
        for i in range(max(start, 0), len(self.losses)):
            if not math.isfinite(self.losses[i]):
                raise PrimusError(
                    f"loss became {self.losses[i]} at step {first_step + i}; "
                    "lower train.lr or disable amp"
                )

    def end_of_epoch(self, metrics) -> None:
        self.after_validation(metrics)
        self.epoch += 1
        self.batch_in_epoch = 0

    def after_validation(self, metrics) -> None:
        self.read_losses()
        val = self.validate()
        score = val if val is not None else (self.losses[-1] if self.losses else None)
        self.log(metrics, {"step": self.step, "epoch": self.epoch, "val_loss": val})
        if score is not None and (self.best_val is None or score < self.best_val):
            self.best_val = score
            self.write_model()

    def log(self, metrics, row: dict[str, Any]) -> None:
        if not self.run.d.main:
            return
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        self.metrics_rows += 1
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    self.tb.add_scalar(key, value, row["step"])

    def write_model(self) -> None:
        if not self.run.d.main:
            return
        run, encoder = self.run, self.run.model.encoder
        config = {
            "name": run.recipe.name,
            "recipe": run.loaded.data,
            "recipe_hash": run.loaded.hash,
            "teachers": [t.identity for t in run.teachers],
            "training_data": run.datasets,
            "training": {
                "steps": self.step,
                "epochs": self.epoch,
                "windows": run.windows,
                "batch_size": self.cfg.batch_size,
                "global_batch": self.global_batch,
                "world_size": run.d.world,
                "device": str(run.device),
            },
            "validation": {"loss": self.best_val, "step": self.step},
            "switches": switches(run.recipe, run.d),
            "provenance": [
                provenance(kind, ref.type) for _, kind, ref in component_refs(run.recipe)
            ],
        }
        card = model_card(
            {
                **config,
                "encoder": {
                    "type": run.recipe.encoder.type,
                    "params": encoder.primus_params,
                    "provenance": provenance("encoder", run.recipe.encoder.type),
                },
                "imu_contract": encoder.imu_contract.model_dump(),
                "output_sizes": encoder.output_sizes,
            },
            body=f"Pretrained with the `{run.recipe.name}` recipe on "
            f"{', '.join(run.datasets)}; best validation loss "
            f"{self.best_val:.4f} at step {self.step}.",
        )
        save_model_dir(
            encoder,
            run.out / "model",
            encoder_type=run.recipe.encoder.type,
            encoder_params=encoder.primus_params,
            extra_config=config,
            card=card,
            overwrite=True,
        )


# ---------------------------------------------------------------- entry point
def environment(device: torch.device, d: Dist) -> dict[str, Any]:
    env = {
        "primus": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "world_size": d.world,
        "argv": sys.argv,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def train(
    recipe: str,
    overrides=(),
    out: str | Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    tensorboard: bool = False,
) -> TrainResult:
    """Run a recipe; returns where the model directory was written."""
    import yaml

    loaded = resolve_recipe(recipe, overrides)
    problems = check_recipe(loaded.recipe)
    if problems:  # before any data is read or model built
        raise PrimusError(f"recipe '{loaded.recipe.name}': " + "; ".join(problems))
    cfg = loaded.recipe.train
    dev = resolve_device(device or cfg.device)
    d = init_distributed(dev)
    if dev.type == "cuda":
        if d.enabled:
            dev = torch.device("cuda", d.local_rank)
            torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    out = Path(out or Path("runs") / loaded.recipe.name)
    if d.main:
        cleaned = prepare_run_dir(out, resume)
        if cleaned:
            log.info("%s: removed %s (left by a run that died)", out, ", ".join(cleaned))
    run = build_run(loaded, out, dev, d, progress)
    trainer = Trainer(run, max_steps, progress, tensorboard)
    if resume:
        state = load_checkpoint(out / "checkpoint.pt", trainer.compat)
        trainer.restore(state)
        if d.main:  # rows logged after that checkpoint are logged again by this run
            rows = trim_metrics(out / "metrics.jsonl", state.get("metrics_rows"), trainer.step)
            trainer.metrics_rows = rows
        log.info("resumed %s at step %d (epoch %d)", out, trainer.step, trainer.epoch)
    if d.main:
        (out / "recipe.yaml").write_text(yaml.safe_dump(loaded.data, sort_keys=False))
        (out / "env.json").write_text(json.dumps(environment(dev, d), indent=2) + "\n")
        write_json(out / "switches.json", switches(loaded.recipe, d))
        log.info(
            "training %s on %s: %d windows, %d steps of %d (%d process%s)",
            loaded.recipe.name,
            dev,
            run.windows,
            trainer.total_steps,
            cfg.batch_size,
            d.world,
            "es" if d.world > 1 else "",
        )
    with open(out / "metrics.jsonl", "a") if d.main else open(os.devnull, "w") as metrics:
        interrupted = trainer.run_loop(metrics)
        if not interrupted and trainer.batch_in_epoch:  # stopped mid-epoch by max_steps
            trainer.after_validation(metrics)
        elif not interrupted and not (out / "model").exists():
            trainer.after_validation(metrics)
    trainer.save()
    if trainer.tb is not None:
        trainer.tb.close()
    return TrainResult(
        out,
        out / "model" if (out / "model").exists() else None,
        trainer.step,
        trainer.best_val,
        interrupted,
        trainer.losses,
    )
