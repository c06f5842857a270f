"""Few-shot and zero-shot evaluation of IMU encoders (the PRIMUS protocol, docs/evaluation.md).

Per seed: the dataset's subjects are split into training and held-out test subjects, k labelled
windows per class are drawn from the training subjects, a classifier is fitted on them and scored
on every window of the test subjects. Modes: ``linear`` (a linear head on frozen embeddings, which
are computed once per model), ``finetune`` (encoder and head), ``knn`` (cosine k-NN on frozen
embeddings) and ``zeroshot`` (cosine to text-teacher embeddings of class prompts, no labels).
Baselines (untrained encoder, supervised from scratch, classical features) run in the same table.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import NARRATION_TEMPLATES, WindowSet, few_shot_indices, split_by_subject
from .errors import PrimusError

log = logging.getLogger("primus.eval")

MODES = ("linear", "finetune", "zeroshot", "knn")
HEADS = ("mmcl", "emb", "ssl")
INITS = ("text", "random")
BASELINES = ("untrained", "supervised", "classical")
ALL = "all"  # a shots value: every labelled training window
LOGIT_SCALE = 10.0  # logits = scale * <normalised features, head rows> (InfoNCE's tau = 0.1)


class EvalError(PrimusError):
    """Bad evaluation settings or a dataset/model that cannot be evaluated."""


# ---------------------------------------------------------------------------- settings
@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (recorded in its JSON report)."""

    dataset: str
    shots: list[int | str] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    seeds: int = 5
    mode: str = "linear"
    head: str | None = None  # None: mmcl when the encoder has it, else emb
    init: str = "text"  # linear/finetune head start: text prompts (when sizes match) or random
    epochs: int = 20
    min_steps: int = 300  # few-shot sets are tiny: at least this many steps of a linear head
    finetune_min_steps: int = 50  # ... and of a fine-tuned encoder (costly on a CPU)
    lr: float | None = None  # the head's; None: 1e-3 from text prompts, 1e-2 from random
    encoder_lr: float = 1e-4  # a pretrained encoder's learning rate when fine-tuning
    scratch_lr: float = 1e-3  # an untrained encoder's learning rate (supervised baseline)
    weight_decay: float = 1e-4
    batch_size: int = 256
    warmup_fraction: float = 0.1
    test_fraction: float = 0.3
    test_subjects: list[int] | None = None  # a fixed test split (then seeds vary only the shots)
    knn_k: int = 5
    teacher: str | None = None  # text teacher for prompts; None: from the model's config
    device: str | None = None
    seed_offset: int = 0

    def check(self) -> None:
        if self.mode not in MODES:
            raise EvalError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.head is not None and self.head not in HEADS:
            raise EvalError(f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.init not in INITS:
            raise EvalError(f"--init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.seeds < 1:
            raise EvalError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.shots and self.mode != "zeroshot":
            raise EvalError("--shots is empty")
        for k in self.shots:
            if k != ALL and (not isinstance(k, int) or k < 1):
                raise EvalError(f"shots must be positive integers or 'all', got {k!r}")
        if (
            self.epochs < 0
            or min(self.min_steps, self.finetune_min_steps) < 0
            or self.batch_size < 1
            or self.knn_k < 1
        ):
            raise EvalError("epochs and min_steps must be >= 0; batch_size and knn_k >= 1")
        if any(v is not None and v <= 0 for v in (self.lr, self.encoder_lr, self.scratch_lr)):
            raise EvalError("learning rates must be positive")

    def seed_values(self) -> list[int]:
        return [self.seed_offset + i for i in range(self.seeds)]


def parse_shots(text: str) -> list[int | str]:
    """'1,2,5,all' -> [1, 2, 5, 'all'] (errors name the bad item)."""
    out: list[int | str] = []
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        if item.lower() == ALL:
            out.append(ALL)
            continue
        try:
            value = int(item)
        except ValueError:
            raise EvalError(f"--shots: {item!r} is not a whole number or 'all'") from None
        if value < 1:
            raise EvalError(f"--shots: {value} must be at least 1")
        out.append(value)
    if not out:
        raise EvalError("--shots: no values given")
    return out


# ---------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    """An encoder to evaluate, with what is known about how it was made."""

    name: str
    encoder: nn.Module
    encoder_type: str
    encoder_params: dict[str, Any]
    teachers: list[str]  # teacher identities from its config (empty when unknown)
    source: str


def load_model(spec: str, device: torch.device | None = None) -> LoadedModel:
    """A model directory, a zoo name, or ``random:<encoder>`` (an untrained encoder, seed 0)."""
    from .modeldir import load_model_dir, read_model_config

    spec = str(spec)
    if spec.startswith("random:"):
        encoder_type = spec.split(":", 1)[1]
        encoder = untrained_encoder(encoder_type, {})
        return LoadedModel(spec, encoder, encoder_type, {}, [], "untrained")
    path = Path(spec)
    if not path.is_dir():
        if "/" in spec or "\\" in spec or spec.startswith("."):
            raise EvalError(f"{spec}: no such model directory")
        path = zoo_model_dir(spec)
    config = read_model_config(path)
    encoder = load_model_dir(path, device="cpu")
    return LoadedModel(
        spec if not Path(spec).is_dir() else model_dir_name(path),
        encoder,
        config["encoder"]["type"],
        dict(config["encoder"].get("params") or {}),
        [str(t) for t in config.get("teachers") or []],
        str(path),
    )


def model_dir_name(path: Path) -> str:
    """A model directory's display name: its folder, or the run's folder for RUN/model."""
    path = path.resolve()
    return path.parent.name if path.name == "model" else path.name


def zoo_model_dir(name: str) -> Path:
    try:
        from .zoo import resolve_model_dir
    except ImportError:
        raise EvalError(f"{name}: not a model directory (and no zoo is installed)") from None
    return Path(resolve_model_dir(name))


def untrained_encoder(encoder_type: str, params: dict[str, Any], seed: int = 0) -> nn.Module:
    """A freshly initialised encoder (deterministic for a seed)."""
    from .components import create

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = create("encoder", encoder_type, **params)
    return encoder.eval()


def choose_head(encoder: nn.Module, head: str | None) -> str:
    sizes = dict(getattr(encoder, "output_sizes", {}) or {})
    if head is None:
        return "mmcl" if "mmcl" in sizes else "emb"
    if head not in sizes:
        raise EvalError(f"the encoder has no '{head}' output (it has: {', '.join(sizes)})")
    return head


@torch.no_grad()
def embed_all(
    encoder: nn.Module, imu: np.ndarray, head: str, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """(N, D) float32 embeddings of every window (encoder frozen, eval mode), on the CPU."""
    encoder = encoder.to(device).eval()
    parts = []
    for start in range(0, len(imu), batch_size):
        x = torch.from_numpy(np.array(imu[start : start + batch_size], np.float32))
        parts.append(encoder(x.to(device))[head].float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, encoder.output_sizes[head])


# ---------------------------------------------------------------------------- prompts
def class_prompts(ws: WindowSet) -> list[list[str]]:
    """Several text prompts per class: the dataset's distinct narrations of that class (built
    from its activity phrases), or templates around the class name when it has none."""
    prompts: list[list[str]] = []
    labels = np.asarray(ws.labels)
    for c, name in enumerate(ws.class_names):
        seen: list[str] = []
        if ws.narrations is not None:
            for i in np.flatnonzero(labels == c):
                text = ws.narrations[int(i)]
                if text and text not in seen:
                    seen.append(text)
        if not seen:
            phrase = name.replace("_", " ").replace("-", " ").lower()
            seen = [t.format(phrase) for t in NARRATION_TEMPLATES]
        prompts.append(sorted(seen))
    return prompts


def teacher_name_for(teachers: Sequence[str], explicit: str | None) -> str:
    """The registered text teacher to embed prompts with: explicit, else the model's own."""
    if explicit:
        return explicit
    for identity in teachers:
        low = identity.lower()
        if "minilm" in low:
            return "minilm-text"
        if "clip" in low:
            return "clip-text"
    return "minilm-text"


def prompt_embeddings(prompts: list[list[str]], teacher_name: str) -> torch.Tensor:
    """(classes, D): the L2-normalised mean of each class's prompt embeddings (cached)."""
    from .components import create

    teacher = create("teacher", teacher_name)
    if getattr(teacher, "modality", "text") != "text":
        raise EvalError(f"teacher '{teacher_name}' is not a text teacher")
    flat = [p for group in prompts for p in group]
    try:
        from .cache import EmbeddingCache

        emb = EmbeddingCache().get_or_compute(teacher, flat, batch_size=256)
    except ImportError:
        emb = teacher.embed(flat)
    emb = nn.functional.normalize(torch.as_tensor(emb).float(), dim=-1)
    rows, start = [], 0
    for group in prompts:
        rows.append(emb[start : start + len(group)].mean(0))
        start += len(group)
    return nn.functional.normalize(torch.stack(rows), dim=-1)


def teacher_output_size(teacher_name: str) -> int | None:
    from .components import create

    try:
        return int(create("teacher", teacher_name).output_size)
    except PrimusError:
        return None


# ---------------------------------------------------------------------------- metrics
def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """accuracy, macro-F1 and mean per-class accuracy over the classes present in y_true."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise EvalError("no test windows")
    classes = np.unique(y_true)
    recalls, f1s = [], []
    for c in classes:
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        support = float(np.sum(y_true == c))
        predicted = float(np.sum(y_pred == c))
        recalls.append(tp / support)
        f1s.append(2 * tp / (support + predicted) if support + predicted else 0.0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(np.mean(f1s)),
        "mean_class_accuracy": float(np.mean(recalls)),
    }


# ---------------------------------------------------------------------------- training heads
def training_steps(n: int, s: EvalSettings, min_steps: int | None = None) -> int:
    """epochs over n windows, but at least ``min_steps`` (0 epochs: no training at all)."""
    floor = s.min_steps if min_steps is None else min_steps
    return max(s.epochs * math.ceil(n / s.batch_size), floor if s.epochs else 0)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_fraction: float):
    warmup = max(1, round(warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class CosineHead(nn.Module):
    """Linear classifier on L2-normalised features, logits scaled by LOGIT_SCALE; starts from
    class text embeddings (its predictions then equal zero-shot's) or from random."""

    def __init__(
        self, dim: int, classes: int, init: torch.Tensor | None, generator: torch.Generator
    ):
        super().__init__()
        self.linear = nn.Linear(dim, classes)
        with torch.no_grad():
            if init is not None:
                self.linear.weight.copy_(init)
                self.linear.bias.zero_()
            else:
                bound = 1 / math.sqrt(dim)
                self.linear.weight.uniform_(-bound, bound, generator=generator)
                self.linear.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return LOGIT_SCALE * self.linear(nn.functional.normalize(features, dim=-1))


def head_lr(s: EvalSettings, init: torch.Tensor | None) -> float:
    """The head's learning rate: explicit, else 1e-3 from text prompts (stay near the zero-shot
    start) and 1e-2 from random (fit within min_steps even on tightly clustered features)."""
    if s.lr is not None:
        return s.lr
    return 1e-3 if init is not None else 1e-2


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    init: torch.Tensor | None,
    s: EvalSettings,
    seed: int,
    device: torch.device,
) -> CosineHead:
    """AdamW + warm-up + cosine on frozen features (full batch when the set is small)."""
    gen = torch.Generator().manual_seed(seed)
    head = CosineHead(features.shape[1], classes, init, gen).to(device)
    features, labels = features.to(device), labels.to(device)
    steps = training_steps(len(features), s)
    if steps == 0:
        return head.eval()
    opt = torch.optim.AdamW(head.parameters(), lr=head_lr(s, init), weight_decay=s.weight_decay)
    sched = warmup_cosine(opt, steps, s.warmup_fraction)
    for idx in batch_indices(len(features), s.batch_size, steps, gen):
        loss = nn.functional.cross_entropy(head(features[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def batch_indices(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """``steps`` batches of indices, cycling through seeded permutations of range(n)."""
    order = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(steps):
        if n <= batch_size:
            yield order
            continue
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def finetune(
    encoder: nn.Module,
    head_name: str,
    imu: np.ndarray,
    labels: np.ndarray,
    classes: int,
    init: torch.Tensor | None,
    s: EvalSettings,
    seed: int,
    device: torch.device,
    encoder_lr: float,
) -> nn.Module:
    """Train a copy of the encoder and a cosine head together; returns encoder+head (eval)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FinetuneModel(
        copy.deepcopy(encoder),
        head_name,
        CosineHead(encoder.output_sizes[head_name], classes, init, gen),
    ).to(device)
    model.train()
    x = torch.from_numpy(np.ascontiguousarray(imu, np.float32)).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    steps = training_steps(len(x), s, s.finetune_min_steps)
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": encoder_lr},
            {"params": model.head.parameters(), "lr": head_lr(s, init)},
        ],
        weight_decay=s.weight_decay,
    )
    sched = warmup_cosine(opt, steps, s.warmup_fraction)
    for idx in batch_indices(len(x), s.batch_size, steps, gen):
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


class FinetuneModel(nn.Module):
    def __init__(self, encoder: nn.Module, head_name: str, head: CosineHead):
        super().__init__()
        self.encoder, self.head_name, self.head = encoder, head_name, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[self.head_name])


@torch.no_grad()
def predict_windows(
    model: nn.Module, imu: np.ndarray, device: torch.device, batch_size: int = 512
) -> np.ndarray:
    out = []
    for start in range(0, len(imu), batch_size):
        x = torch.from_numpy(np.array(imu[start : start + batch_size], np.float32))
        out.append(model(x.to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def knn_predict(
    train_f: torch.Tensor, train_y: np.ndarray, test_f: torch.Tensor, k: int, classes: int
) -> np.ndarray:
    """Cosine k-NN, votes weighted by similarity (ties go to the nearest)."""
    a = nn.functional.normalize(train_f, dim=-1)
    b = nn.functional.normalize(test_f, dim=-1)
    sims = b @ a.T
    k = min(k, a.shape[0])
    top, idx = sims.topk(k, dim=1)
    votes = torch.zeros(len(b), classes)
    votes.scatter_add_(1, torch.from_numpy(train_y)[idx], top + 1e-6 * (top == top[:, :1]))
    return votes.argmax(1).numpy()


# ---------------------------------------------------------------------------- systems
class System:
    """One row of the table: something that fits k shots and predicts the test windows."""

    name: str = ""
    kind: str = "model"  # model | baseline
    mode: str = "linear"
    needs_shots: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "mode": self.mode}

    def run(self, train_idx: np.ndarray, test_idx: np.ndarray, seed: int) -> dict[str, Any]:
        raise NotImplementedError


class EncoderSystem(System):
    """A (pretrained or untrained) encoder under linear / finetune / knn / zeroshot."""

    def __init__(
        self,
        name: str,
        kind: str,
        encoder: nn.Module,
        ws: WindowSet,
        s: EvalSettings,
        mode: str,
        head: str,
        text_init: torch.Tensor | None,
        device: torch.device,
        encoder_lr: float,
        info: dict[str, Any] | None = None,
    ):
        self.name, self.kind, self.mode, self.head = name, kind, mode, head
        self.encoder, self.ws, self.s, self.device = encoder, ws, s, device
        self.text_init, self.encoder_lr = text_init, encoder_lr
        self.needs_shots = mode != "zeroshot"
        self.info = info or {}
        self.features: torch.Tensor | None = None
        if mode != "finetune":
            self.features = embed_all(encoder, ws.imu, head, device)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "head": self.head,
            "init": "text" if self.text_init is not None else "random",
            **self.info,
        }

    def run(self, train_idx: np.ndarray, test_idx: np.ndarray, seed: int) -> dict[str, Any]:
        y = np.asarray(self.ws.labels)
        classes = len(self.ws.class_names)
        extra: dict[str, Any] = {}
        if self.mode == "zeroshot":
            pred = self.zeroshot(test_idx)
        elif self.mode == "knn":
            k = min(self.s.knn_k, max(1, int(np.bincount(y[train_idx]).max())))
            pred = knn_predict(
                self.features[train_idx], y[train_idx], self.features[test_idx], k, classes
            )
        elif self.mode == "linear":
            if self.text_init is not None:
                extra["zeroshot_accuracy"] = float(np.mean(self.zeroshot(test_idx) == y[test_idx]))
            head = fit_head(
                self.features[train_idx],
                torch.from_numpy(y[train_idx]),
                classes,
                self.text_init,
                self.s,
                seed,
                self.device,
            )
            with torch.no_grad():
                pred = head(self.features[test_idx].to(self.device)).argmax(1).cpu().numpy()
        else:
            model = finetune(
                self.encoder,
                self.head,
                self.ws.imu[train_idx],
                y[train_idx],
                classes,
                self.text_init,
                self.s,
                seed,
                self.device,
                self.encoder_lr,
            )
            pred = predict_windows(model, self.ws.imu[test_idx], self.device)
        return {**metrics(y[test_idx], pred), **extra}

    def zeroshot(self, test_idx: np.ndarray) -> np.ndarray:
        feats = nn.functional.normalize(self.features[test_idx], dim=-1)
        return (feats @ self.text_init.T).argmax(1).numpy()


class ClassicalSystem(System):
    """Per-channel statistical features + standardisation + logistic regression (sklearn)."""

    name, kind, mode = "classical (features + logreg)", "baseline", "linear"

    def __init__(self, ws: WindowSet, C: float = 0.5):
        from .baselines import window_features

        self.ws, self.C = ws, C
        self.features = window_features(ws.imu)

    def run(self, train_idx: np.ndarray, test_idx: np.ndarray, seed: int) -> dict[str, Any]:
        from .baselines import fit_logreg

        y = np.asarray(self.ws.labels)
        clf = fit_logreg(self.features[train_idx], y[train_idx], self.C, seed)
        return metrics(y[test_idx], clf.predict(self.features[test_idx]))


# ---------------------------------------------------------------------------- the run
@dataclass
class EvalResult:
    dataset: str
    classes: list[str]
    windows: int
    subjects: int
    settings: dict[str, Any]
    models: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    environment: dict[str, Any]
    seconds: float
    summary: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "primus-eval/1", **asdict(self)}

    def card_rows(self, model: str | None = None) -> list[dict[str, Any]]:
        """Summary rows in the shape model cards take (dataset, mode, shots, accuracy, ...)."""
        rows = []
        for row in self.summary:
            if model is not None and row["model"] != model:
                continue
            rows.append(
                {
                    "dataset": self.dataset,
                    "mode": row["mode"],
                    "shots": row["shots"],
                    "seeds": row["n"],
                    "accuracy": row["accuracy_mean"],
                    "accuracy_std": row["accuracy_std"],
                    "macro_f1": row["macro_f1_mean"],
                    "mean_class_accuracy": row["mean_class_accuracy_mean"],
                }
            )
        return rows


def labelled(ws: WindowSet) -> WindowSet:
    keep = np.flatnonzero(np.asarray(ws.labels) >= 0)
    if keep.size == 0:
        raise EvalError(
            f"dataset '{ws.dataset}' has no labelled windows: it can only be used for pretraining"
        )
    return ws if keep.size == len(ws) else ws.subset(keep)


def split_for_seed(ws: WindowSet, s: EvalSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole subjects on either side; a fixed test set when ``test_subjects`` is given."""
    if s.test_subjects is not None:
        test = np.isin(ws.subjects, np.asarray(s.test_subjects))
        if not test.any() or test.all():
            raise EvalError(f"test_subjects {s.test_subjects} leave an empty train or test side")
        return np.flatnonzero(~test), np.flatnonzero(test)
    return split_by_subject(ws, s.test_fraction, seed)


def shot_indices(ws: WindowSet, train_idx: np.ndarray, k: int | str, seed: int) -> np.ndarray:
    if k == ALL:
        return train_idx
    return train_idx[few_shot_indices(np.asarray(ws.labels)[train_idx], int(k), seed)]


def run_systems(
    systems: Sequence[System], ws: WindowSet, s: EvalSettings, progress: bool = True
) -> list[dict[str, Any]]:
    """Every system x seed x shots; the same split and the same shots for every system."""
    from tqdm.auto import tqdm

    jobs = [(seed, k) for seed in s.seed_values() for k in (s.shots or [0])]
    runs: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(jobs) * len(systems),
        desc=f"eval {ws.dataset}",
        unit="fit",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    zeroshot_done: set[tuple[str, int]] = set()
    for seed, k in jobs:
        train_idx, test_idx = split_for_seed(ws, s, seed)
        picked = shot_indices(ws, train_idx, k, seed) if k else train_idx
        for system in systems:
            bar.update(1)
            if not system.needs_shots:
                if (system.name, seed) in zeroshot_done:
                    continue
                zeroshot_done.add((system.name, seed))
            values = system.run(picked, test_idx, seed * 1000 + (k if isinstance(k, int) else 0))
            runs.append(
                {
                    "model": system.name,
                    "kind": system.kind,
                    "mode": system.mode,
                    "shots": k if system.needs_shots else 0,
                    "seed": seed,
                    "train_windows": int(len(picked)) if system.needs_shots else 0,
                    "test_windows": int(len(test_idx)),
                    **values,
                }
            )
    bar.close()
    return runs


def environment() -> dict[str, Any]:
    from . import __version__

    env = {
        "primus": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def text_init_for(
    model: LoadedModel, head: str, ws: WindowSet, s: EvalSettings, want: bool
) -> tuple[torch.Tensor | None, str]:
    """Class-prompt embeddings when the head's size equals the text teacher's, else None."""
    if not want:
        return None, "random init requested"
    teacher = teacher_name_for(model.teachers, s.teacher)
    size = model.encoder.output_sizes.get(head)
    teacher_size = teacher_output_size(teacher)
    if teacher_size is None:
        return None, f"text teacher '{teacher}' is unavailable"
    if size != teacher_size:
        return None, f"head '{head}' has {size} dims, text teacher '{teacher}' has {teacher_size}"
    return prompt_embeddings(class_prompts(ws), teacher), f"text teacher '{teacher}'"


def build_model_system(
    model: LoadedModel,
    ws: WindowSet,
    s: EvalSettings,
    device: torch.device,
    kind: str = "model",
    name: str | None = None,
    mode: str | None = None,
) -> EncoderSystem:
    mode = mode or s.mode
    head = choose_head(model.encoder, s.head)
    want_text = mode == "zeroshot" or s.init == "text"
    init, why = text_init_for(model, head, ws, s, want_text) if mode != "knn" else (None, "knn")
    if mode == "zeroshot" and init is None:
        raise EvalError(f"zero-shot needs a text-aligned head: {why}")
    if want_text and init is None and mode != "knn":
        log.info("%s: linear head starts from random (%s)", name or model.name, why)
    lr = s.encoder_lr if model.source != "untrained" else s.scratch_lr
    return EncoderSystem(
        name or model.name,
        kind,
        model.encoder,
        ws,
        s,
        mode,
        head,
        init,
        device,
        lr,
        info={"source": model.source, "init_note": why},
    )


def baseline_systems(
    model: LoadedModel,
    ws: WindowSet,
    s: EvalSettings,
    device: torch.device,
    which: Sequence[str] = BASELINES,
) -> list[System]:
    """The untrained encoder (same type and size), supervised from scratch, classical."""
    unknown = sorted(set(which) - set(BASELINES))
    if unknown:
        raise EvalError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
    out: list[System] = []
    if not set(which) & {"untrained", "supervised"}:
        return [ClassicalSystem(ws)] if "classical" in which and s.mode != "zeroshot" else []
    fresh = LoadedModel(
        f"untrained {model.encoder_type}",
        untrained_encoder(model.encoder_type, model.encoder_params),
        model.encoder_type,
        model.encoder_params,
        model.teachers,
        "untrained",
    )
    if "untrained" in which and model.source != "untrained":
        mode = "linear" if s.mode == "finetune" else s.mode
        untrained = copy.copy(s)
        if mode != "zeroshot":  # a random head is no more text-aligned than a random start
            untrained.init = "random"
        try:
            out.append(
                build_model_system(fresh, ws, untrained, device, "baseline", fresh.name, mode)
            )
        except EvalError as exc:
            log.info("untrained baseline skipped: %s", exc)
    if s.mode == "zeroshot":
        return out
    if "supervised" in which:
        scratch = copy.copy(s)
        scratch.head, scratch.init = "emb", "random"
        out.append(
            build_model_system(
                fresh, ws, scratch, device, "baseline", "supervised from scratch", "finetune"
            )
        )
    if "classical" in which:
        out.append(ClassicalSystem(ws))
    return out


def prepare_dataset(name: str, contract, progress: bool = True) -> WindowSet:
    from .data import load_windows

    return labelled(load_windows(name, contract, progress=progress))


def evaluate(
    model: str | LoadedModel,
    settings: EvalSettings,
    baselines: Sequence[str] = BASELINES,
    progress: bool = True,
    windows: WindowSet | None = None,
) -> EvalResult:
    """Evaluate one model (and the baselines) on one dataset; see the module docstring."""
    from .modeldir import resolve_device
    from .reports import summarise

    settings.check()
    started = time.perf_counter()
    device = resolve_device(settings.device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    ws = (
        windows
        if windows is not None
        else prepare_dataset(settings.dataset, loaded.encoder.imu_contract, progress)
    )
    systems: list[System] = [build_model_system(loaded, ws, settings, device)]
    systems += baseline_systems(loaded, ws, settings, device, baselines)
    runs = run_systems(systems, ws, settings, progress)
    result = EvalResult(
        dataset=settings.dataset,
        classes=list(ws.class_names),
        windows=len(ws),
        subjects=int(np.unique(ws.subjects).size),
        settings=asdict(settings),
        models=[system.describe() for system in systems],
        runs=runs,
        environment=environment(),
        seconds=round(time.perf_counter() - started, 2),
    )
    result.summary = summarise(runs)
    return result
