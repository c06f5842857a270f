"""Few-shot and zero-shot evaluation of IMU encoders (docs/evaluation.md).

Per seed: the dataset's subjects are split into training and held-out test subjects, k labelled
windows per class are drawn from the training subjects, a classifier is fitted on them and scored
on every window of the test subjects. Modes: ``linear`` (a linear head on frozen embeddings, which
are computed once per model), ``finetune`` (encoder and head), ``knn`` (cosine k-NN on frozen
embeddings) and ``zeroshot`` (cosine to text-teacher embeddings of class prompts, no labels).
Baselines (untrained encoder, supervised from scratch, classical features) run in the same table.

Two protocols fit the heads (``EvalSettings.protocol``, docs/fidelity.md):
- ``reference``: as the reference's downstream scripts did: AdamW lr 1e-4, wd 1e-4, batch 256,
  linear warm-up over max(T // 100, 10) steps then cosine to 0 over T = int(max(n / 256, 1) *
  epochs) steps, logit scale 1, the head with the best validation accuracy (checked every 5 epochs
  on held-out training subjects) is the one tested.
- ``primus``: a cosine head (logit scale 10), at least ``min_steps`` steps, 10 % warm-up.
Class prompts come from the class names only (hand-written per dataset, or templates), never from
the narrations of any window, in either protocol.
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

from ..data.windows import WindowSet, few_shot_indices, split_by_subject
from ..errors import PrimusError

log = logging.getLogger("primus.eval")

MODES = ("linear", "finetune", "zeroshot", "knn")
HEADS = ("mmcl", "emb", "ssl")
INITS = ("text", "random")
BASELINES = ("untrained", "supervised", "classical")
PROTOCOLS = ("reference", "primus")
ALL = "all"  # a shots value: every labelled training window
LOGIT_SCALE = 10.0  # logits = scale * <normalised features, head rows> (InfoNCE's tau = 0.1)
# the reference's downstream protocol (downstream_evaluation/modeling.py FewShotModel and the
# classification_downstream_*.py scripts)
REFERENCE_LR = 1e-4
REFERENCE_WEIGHT_DECAY = 1e-4
REFERENCE_BATCH = 256
REFERENCE_VAL_EVERY = 5  # epochs between validation checks (check_val_every_n_epoch)
REFERENCE_EPOCHS = {"realworld": 50}  # per dataset; 20 otherwise
DEFAULT_EPOCHS = 20
# templates for a class that has no hand-written prompts: the class name in a few sentences
PROMPT_TEMPLATES = (
    "{}",
    "a person is {}",
    "someone {}",
    "the person is {}",
    "the wearer is {}",
    "somebody is {}",
)


class EvalError(PrimusError):
    """Bad evaluation settings or a dataset/model that cannot be evaluated."""


# ---------------------------------------------------------------------------- settings
@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (recorded in its JSON report)."""

    dataset: str
    dataset_params: dict[str, Any] = field(default_factory=dict)  # e.g. root of a local copy
    shots: list[int | str] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    seeds: int = 5
    mode: str = "linear"
    head: str | None = None  # None: mmcl when the encoder has it, else emb
    init: str = "text"  # linear/finetune head start: text prompts (when sizes match) or random
    protocol: str = "primus"  # how heads are fitted: reference | primus (module docstring)
    epochs: int | None = None  # None: 20 (reference protocol: 50 for realworld)
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
    val_fraction: float = 0.2  # reference protocol: share of training subjects for validation
    teacher: str | None = None  # text teacher for prompts; None: from the model's config
    prompts: str | None = None  # YAML/JSON file: class name -> prompts (replaces the dataset's)
    device: str | None = None
    seed_offset: int = 0
    dtype: str = "fp32"  # precision of the frozen embeddings: fp32 | bf16 | int8

    def check(self) -> None:
        from ..data.embed import INFERENCE_DTYPES

        if self.dtype not in INFERENCE_DTYPES:
            raise EvalError(
                f"--dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {self.dtype!r}"
            )
        if self.dtype != "fp32" and self.mode == "finetune":
            raise EvalError("--dtype bf16/int8 is for frozen embeddings; finetune runs in fp32")
        if self.protocol not in PROTOCOLS:
            raise EvalError(
                f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.epochs is None:
            self.epochs = default_epochs(self.protocol, self.dataset)
        if not 0 < self.val_fraction < 1:
            raise EvalError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
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

    @property
    def epoch_count(self) -> int:
        return default_epochs(self.protocol, self.dataset) if self.epochs is None else self.epochs


def default_epochs(protocol: str, dataset: str) -> int:
    if protocol == "reference":
        return REFERENCE_EPOCHS.get(dataset, DEFAULT_EPOCHS)
    return DEFAULT_EPOCHS


def protocol_record(s: EvalSettings) -> dict[str, Any]:
    """What the protocol actually does, for the report (every value that decides a result)."""
    if s.protocol == "reference":
        return {
            "name": "reference",
            "optimizer": "adamw",
            "lr": REFERENCE_LR,
            "encoder_lr": REFERENCE_LR,
            "weight_decay": REFERENCE_WEIGHT_DECAY,
            "batch_size": REFERENCE_BATCH,
            "epochs": s.epoch_count,
            "schedule": "linear warm-up over max(T // 100, 10) steps, then cosine to 0 at T = "
            "int(max(n / 256, 1) * epochs); epochs x ceil(n / 256) steps run",
            "logit_scale": 1.0,
            "head": "text init: normalised features x mean of normalised prompt embeddings, "
            "bias 0; random init: nn.Linear on raw features",
            "selection": f"best validation accuracy, checked every {REFERENCE_VAL_EVERY} epochs",
            "val_fraction": s.val_fraction,
            "prompts": "per class, from the class names (never narrations)",
        }
    return {
        "name": "primus",
        "optimizer": "adamw",
        "lr": s.lr if s.lr is not None else "1e-3 (text init) / 1e-2 (random init)",
        "encoder_lr": s.encoder_lr,
        "weight_decay": s.weight_decay,
        "batch_size": s.batch_size,
        "epochs": s.epoch_count,
        "min_steps": s.min_steps,
        "finetune_min_steps": s.finetune_min_steps,
        "schedule": f"linear warm-up over {s.warmup_fraction:g} of the steps, then cosine",
        "logit_scale": LOGIT_SCALE,
        "head": "cosine head: normalised features x rows (text init: normalised prompt means)",
        "selection": "the head after the last step",
        "prompts": "per class, from the class names (never narrations)",
    }


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
    switches: dict[str, Any] = field(default_factory=dict)  # how it was trained (config.json)


def load_model(spec: str, device: torch.device | None = None) -> LoadedModel:
    """A model directory, a zoo name, or ``random:<encoder>`` (an untrained encoder, seed 0)."""
    from ..zoo.modeldir import load_model_dir, read_model_config

    spec = str(spec)
    if spec.startswith("random:"):
        encoder_type = spec.split(":", 1)[1]
        encoder = untrained_encoder(encoder_type, {})
        return LoadedModel(spec, encoder, encoder_type, {}, [], "untrained")
    path = Path(spec)
    if not path.is_dir():
        is_hub_id = spec.startswith("hf-hub:")  # ORG/NAME holds a '/' but is not a path
        if not is_hub_id and ("/" in spec or "\\" in spec or spec.startswith(".")):
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
        dict(config.get("switches") or {}),
    )


def model_dir_name(path: Path) -> str:
    """A model directory's display name: its folder, or the run's folder for RUN/model."""
    path = path.resolve()
    return path.parent.name if path.name == "model" else path.name


def zoo_model_dir(name: str) -> Path:
    try:
        from ..zoo.hub import resolve_model_dir
    except ImportError:
        raise EvalError(f"{name}: not a model directory (and no zoo is installed)") from None
    return Path(resolve_model_dir(name))


def untrained_encoder(encoder_type: str, params: dict[str, Any], seed: int = 0) -> nn.Module:
    """A freshly initialised encoder (deterministic for a seed)."""
    from ..components import create

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
    encoder: nn.Module,
    imu: np.ndarray,
    head: str,
    device: torch.device,
    batch_size: int = 512,
    dtype: str = "fp32",
) -> torch.Tensor:
    """(N, D) float32 embeddings of every window (encoder frozen, eval mode, computed in
    ``dtype``: see data.embed.for_inference), on the CPU."""
    from ..data.embed import batched_outputs, for_inference

    encoder = for_inference(encoder, dtype, device)
    return torch.from_numpy(batched_outputs(encoder, imu, head, batch_size, device))


# ---------------------------------------------------------------------------- prompts
def dataset_prompts(dataset: str) -> dict[str, list[str]]:
    """The hand-written prompts of a dataset: ``CLASS_PROMPTS[dataset]`` in the ``prompts``
    module of the package that registers it (plugins/primus_datasets/prompts.py); {} if none."""
    import importlib

    from ..components import get_component, has_component

    if not dataset or not has_component("dataset", dataset):
        return {}
    module = getattr(get_component("dataset", dataset).factory, "__module__", "") or ""
    package = module.rsplit(".", 1)[0] if "." in module else module
    try:
        prompts = importlib.import_module(f"{package}.prompts")
    except ImportError:
        return {}
    return dict((getattr(prompts, "CLASS_PROMPTS", {}) or {}).get(dataset, {}))


def read_prompts(path: str | Path) -> dict[str, list[str]]:
    """A prompts file: a YAML (or JSON) mapping class name -> list of prompts."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalError(f"--prompts {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise EvalError(f"--prompts {path}: not UTF-8 text") from None
    except yaml.YAMLError:
        raise EvalError(f"--prompts {path}: not valid YAML or JSON") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and v and all(isinstance(t, str) and t.strip() for t in v)
        for v in data.values()
    ):
        raise EvalError(
            f"--prompts {path}: expected a mapping class name -> non-empty list of text"
        )
    return {str(k): [str(t) for t in v] for k, v in data.items()}


def template_prompts(name: str) -> list[str]:
    phrase = name.replace("_", " ").replace("-", " ").lower()
    return [t.format(phrase) for t in PROMPT_TEMPLATES]


def class_prompts(
    dataset: str, class_names: Sequence[str], overrides: dict[str, list[str]] | None = None
) -> list[list[str]]:
    """Several text prompts per class, from the class names only: ``overrides`` (--prompts),
    else the dataset's hand-written prompts, else templates around the class name. Never the
    narrations of any window, so zero-shot uses no labels."""
    own = dataset_prompts(dataset)
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(class_names))
    if unknown:
        raise EvalError(f"prompts name classes {unknown} that '{dataset}' does not have")
    return [list(overrides.get(c) or own.get(c) or template_prompts(c)) for c in class_names]


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


def prompt_embeddings(
    prompts: list[list[str]], teacher_name: str, renormalise: bool = True
) -> torch.Tensor:
    """(classes, D): the mean of each class's L2-normalised prompt embeddings (cached),
    L2-normalised again unless ``renormalise`` is off (the reference keeps the plain mean)."""
    from ..components import create

    teacher = create("teacher", teacher_name)
    if getattr(teacher, "modality", "text") != "text":
        raise EvalError(f"teacher '{teacher_name}' is not a text teacher")
    flat = [p for group in prompts for p in group]
    try:
        from ..data.cache import EmbeddingCache

        emb = EmbeddingCache().get_or_compute(teacher, flat, batch_size=256)
    except ImportError:
        emb = teacher.embed(flat)
    emb = nn.functional.normalize(torch.as_tensor(emb).float(), dim=-1)
    rows, start = [], 0
    for group in prompts:
        rows.append(emb[start : start + len(group)].mean(0))
        start += len(group)
    means = torch.stack(rows)
    return nn.functional.normalize(means, dim=-1) if renormalise else means


def teacher_output_size(teacher_name: str) -> int | None:
    from ..components import create

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
    epochs = s.epoch_count
    return max(epochs * math.ceil(n / s.batch_size), floor if epochs else 0)


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


# ---------------------------------------------------------------------------- reference protocol
def reference_total_steps(n: int, epochs: int, batch_size: int = REFERENCE_BATCH) -> int:
    """T of the reference's schedule: int(max(n / batch, 1) * epochs)."""
    return int(max(n / batch_size, 1) * epochs)


def reference_warmup_steps(total: int) -> int:
    return max(total // 100, 10)


def reference_lr_factor(step: int, total: int, warmup: int) -> float:
    """The reference's WarmupCosineAnnealingLR (eta_min 0) as a factor of the base lr at
    ``step`` (0 = the first optimiser step): (step + 1) / warmup during the warm-up, then
    (1 + cos(pi * (step - warmup) / (total - warmup))) / 2. Past ``total`` the cosine goes on
    (the reference runs epochs x ceil(n / batch) steps, which can exceed T). T == warmup, where
    the reference divides by zero, is taken as a cosine over one step."""
    if step < warmup:
        return (step + 1) / warmup
    return (1 + math.cos(math.pi * (step - warmup) / ((total - warmup) or 1))) / 2


class ReferenceHead(nn.Module):
    """The reference's classification head: with class-prompt embeddings, a linear layer on
    L2-normalised features whose rows are the prompt means (not renormalised), bias 0, logit
    scale 1; without, a plain nn.Linear (default init) on the raw features."""

    def __init__(self, dim: int, classes: int, init: torch.Tensor | None, seed: int):
        super().__init__()
        self.normalise = init is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear = nn.Linear(dim, classes)
        if init is not None:
            with torch.no_grad():
                self.linear.weight.copy_(init)
                self.linear.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            features = features / features.norm(dim=-1, keepdim=True)
        return self.linear(features)


@torch.no_grad()
def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    model.eval()
    hits = 0
    for start in range(0, len(x), 512):
        logits = model(x[start : start + 512].to(device))
        hits += int((logits.argmax(1).cpu() == y[start : start + 512]).sum())
    return hits / max(len(x), 1)


def fit_reference(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    epochs: int,
    seed: int,
    device: torch.device,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` (inputs -> logits; its trainable parameters only) as the reference did:
    AdamW(lr 1e-4, wd 1e-4), shuffled batches of 256 (the last one partial), the warm-up/cosine
    schedule, and every REFERENCE_VAL_EVERY epochs a validation check; the weights with the best
    validation accuracy (the first of equals) are restored. Without validation windows the last
    weights stay."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=REFERENCE_LR, weight_decay=REFERENCE_WEIGHT_DECAY)
    total = reference_total_steps(len(x), epochs)
    warmup = reference_warmup_steps(total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: reference_lr_factor(step, total, warmup)
    )
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    checks: list[tuple[int, float]] = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), REFERENCE_BATCH):
            idx = order[start : start + REFERENCE_BATCH]
            loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if val is not None and (epoch + 1) % REFERENCE_VAL_EVERY == 0:
            acc = accuracy_of(model, val[0], val[1], device)
            checks.append((epoch + 1, acc))
            if best is None or acc > best[0]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = (acc, epoch + 1, state)
    if best is not None:
        model.load_state_dict(best[2])
    info = {"best_val_accuracy": best[0], "best_epoch": best[1]} if best else {}
    return model.eval(), {**info, "val_checks": checks} if checks else info


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

    def run(
        self, train_idx: np.ndarray, test_idx: np.ndarray, seed: int, val_idx=None
    ) -> dict[str, Any]:
        """Fit on ``train_idx``, score ``test_idx``; ``val_idx`` (reference protocol only):
        windows to choose the best head on."""
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
            self.features = embed_all(encoder, ws.imu, head, device, dtype=s.dtype)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "head": self.head,
            "init": "text" if self.text_init is not None else "random",
            **self.info,
        }

    def run(
        self, train_idx: np.ndarray, test_idx: np.ndarray, seed: int, val_idx=None
    ) -> dict[str, Any]:
        y = np.asarray(self.ws.labels)
        classes = len(self.ws.class_names)
        extra: dict[str, Any] = {}
        if self.mode == "zeroshot":
            pred = self.zeroshot(test_idx)
        elif self.s.protocol == "reference" and self.mode in ("linear", "finetune"):
            pred, extra = self.run_reference(train_idx, test_idx, val_idx, seed)
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

    def run_reference(
        self, train_idx: np.ndarray, test_idx: np.ndarray, val_idx, seed: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The reference protocol: zero-shot accuracy of the initial head, then fit_reference."""
        y = torch.from_numpy(np.array(self.ws.labels, np.int64))
        classes = len(self.ws.class_names)
        extra: dict[str, Any] = {}
        if self.text_init is not None:
            extra["zeroshot_accuracy"] = float(
                np.mean(self.zeroshot(test_idx) == y[test_idx].numpy())
            )
        has_val = val_idx is not None and len(val_idx) > 0
        if self.mode == "linear":
            feats = self.features
            model: nn.Module = ReferenceHead(feats.shape[1], classes, self.text_init, seed)
            x, val = feats[train_idx], (feats[val_idx], y[val_idx]) if has_val else None
        else:
            encoder = copy.deepcopy(self.encoder).requires_grad_(True)
            head = ReferenceHead(encoder.output_sizes[self.head], classes, self.text_init, seed)
            model = FinetuneModel(encoder, self.head, head)

            def windows(idx: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(self.ws.imu[idx], np.float32))

            x, val = windows(train_idx), (windows(val_idx), y[val_idx]) if has_val else None
        model, info = fit_reference(
            model.to(self.device), x, y[train_idx], val, self.s.epoch_count, seed, self.device
        )
        extra.update(info)
        if self.mode == "linear":
            with torch.no_grad():
                logits = model(self.features[test_idx].to(self.device))
            return logits.argmax(1).cpu().numpy(), extra
        return predict_windows(model, self.ws.imu[test_idx], self.device), extra

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

    def run(
        self, train_idx: np.ndarray, test_idx: np.ndarray, seed: int, val_idx=None
    ) -> dict[str, Any]:
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
    protocol: dict[str, Any] = field(default_factory=dict)  # protocol_record(settings)

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


def validation_split(
    ws: WindowSet, train_idx: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded ``fraction`` of the training subjects (at least one)
    validates; with a single training subject there is no validation (empty)."""
    subjects = np.unique(ws.subjects[train_idx])
    if len(subjects) < 2:
        return train_idx, np.zeros(0, np.int64)
    rng = np.random.default_rng(10_007 + seed)
    count = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
    held = rng.choice(subjects, size=count, replace=False)
    is_val = np.isin(ws.subjects[train_idx], held)
    return train_idx[~is_val], train_idx[is_val]


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
        val_idx = None
        if s.protocol == "reference":
            train_idx, val_idx = validation_split(ws, train_idx, s.val_fraction, seed)
        picked = shot_indices(ws, train_idx, k, seed) if k else train_idx
        for system in systems:
            bar.update(1)
            if not system.needs_shots:
                if (system.name, seed) in zeroshot_done:
                    continue
                zeroshot_done.add((system.name, seed))
            fit_seed = seed * 1000 + (k if isinstance(k, int) else 0)
            if val_idx is None:
                values = system.run(picked, test_idx, fit_seed)
            else:
                values = system.run(picked, test_idx, fit_seed, val_idx=val_idx)
            runs.append(
                {
                    "model": system.name,
                    "kind": system.kind,
                    "mode": system.mode,
                    "shots": k if system.needs_shots else 0,
                    "seed": seed,
                    "train_windows": int(len(picked)) if system.needs_shots else 0,
                    "test_windows": int(len(test_idx)),
                    **({} if val_idx is None else {"val_windows": int(len(val_idx))}),
                    **values,
                }
            )
    bar.close()
    return runs


def environment() -> dict[str, Any]:
    from ..version import __version__

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
    overrides = read_prompts(s.prompts) if s.prompts else None
    prompts = class_prompts(ws.dataset or s.dataset, ws.class_names, overrides)
    renormalise = s.protocol != "reference"
    return prompt_embeddings(prompts, teacher, renormalise), f"text teacher '{teacher}'"


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
        info={"source": model.source, "init_note": why, "switches": model.switches},
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


def prepare_dataset(
    name: str, contract, progress: bool = True, params: dict[str, Any] | None = None
) -> WindowSet:
    """The labelled windows of dataset ``name`` (with ``params``, e.g. the root of a local copy
    of a licence-gated dataset)."""
    from ..data.windows import load_windows

    ref = {"type": name, **params} if params else name
    return labelled(load_windows(ref, contract, progress=progress))


def evaluate(
    model: str | LoadedModel,
    settings: EvalSettings,
    baselines: Sequence[str] = BASELINES,
    progress: bool = True,
    windows: WindowSet | None = None,
) -> EvalResult:
    """Evaluate one model (and the baselines) on one dataset; see the module docstring."""
    from ..device import resolve_device
    from .reports import summarise

    settings.check()
    started = time.perf_counter()
    device = resolve_device(settings.device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    ws = (
        windows
        if windows is not None
        else prepare_dataset(
            settings.dataset, loaded.encoder.imu_contract, progress, settings.dataset_params
        )
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
        protocol=protocol_record(settings),
    )
    result.summary = summarise(runs)
    return result
