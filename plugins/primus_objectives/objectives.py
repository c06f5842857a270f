"""The PRIMUS objectives that need no state: ``ss`` (self-supervised), ``mm`` (multimodal) and
the ``supervised`` baseline. Each is a torch module called with a StepBatch and returning
``(total, {term: value})``; the terms are the unweighted InfoNCE values (for logging)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from primus_core.errors import ComponentError, DataError

from .batch import StepBatch
from .config import (
    MMConfig,
    SSConfig,
    SupervisedConfig,
)


def head_output(outputs: dict[str, torch.Tensor] | None, head: str, loss: str) -> torch.Tensor:
    if outputs is None or head not in outputs:
        have = ", ".join(outputs or {}) or "none"
        raise ComponentError(f"loss '{loss}' needs the encoder head '{head}' (outputs: {have})")
    return outputs[head]


def attached_zero(like: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that is part of the graph of ``like`` (so backward() works on it alone)."""
    return like.float().sum() * 0.0


def check_teacher_size(imu: torch.Tensor, target: torch.Tensor, loss: str, modality: str) -> None:
    if imu.shape[1] != target.shape[1]:
        raise ComponentError(
            f"loss '{loss}': the mmcl head is {imu.shape[1]}-d but the "
            f"{modality} teacher gives {target.shape[1]}-d embeddings; set the "
            "encoder's mmcl_dim to the teacher's size"
        )


class SelfSupervisedLoss(nn.Module):
    """L_SS = c * InfoNCE(ssl(x), ssl(aug(x)))."""

    modalities: tuple[str, ...] = ()
    needs_augmented_view = True
    needs_labels = False
    # temperature role -> attribute holding the InfoNCE (the trainer may share them by role)
    infonce_slots = {"self-supervised": "infonce"}

    def __init__(self, config: SSConfig | None = None):
        super().__init__()
        self.config = config or SSConfig()
        self.infonce = self.config.infonce()

    def forward(self, batch: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.imu_aug is None:
            raise ComponentError("loss 'ss' needs the augmented view (batch.imu_aug is None)")
        raw = head_output(batch.imu, "ssl", "ss")
        aug = head_output(batch.imu_aug, "ssl", "ss")
        value = self.infonce(raw, aug)
        terms = {"infonce": value.detach(), "tau": self.infonce.temperature.detach()}
        return self.config.ssl_coeff * value, terms


class MultimodalLoss(nn.Module):
    """L_MM = (1 - c) * sum_m InfoNCE(mmcl(x), E_m), masked where a window lacks m; modalities
    absent from the batch are skipped."""

    needs_augmented_view = False
    needs_labels = False
    infonce_slots = {"multimodal": "infonce"}

    def __init__(self, config: MMConfig | None = None):
        super().__init__()
        self.config = config or MMConfig()
        self.modalities: tuple[str, ...] = tuple(self.config.modalities)
        self.infonce = self.config.infonce()

    def forward(self, batch: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mmcl = head_output(batch.imu, "mmcl", "mm")
        total = attached_zero(mmcl)
        terms: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            if modality not in batch.teachers:
                continue
            target = batch.teachers[modality]
            check_teacher_size(mmcl, target, "mm", modality)
            value = self.infonce(mmcl, target, batch.teacher_mask.get(modality))
            total = total + value
            terms[modality] = value.detach()
        terms["tau"] = self.infonce.temperature.detach()
        return (1.0 - self.config.ssl_coeff) * total, terms


class SupervisedLoss(nn.Module):
    """Cross-entropy of a linear classifier (owned by the loss) on ``head``; labels -1 ignored."""

    modalities: tuple[str, ...] = ()
    needs_augmented_view = False
    needs_labels = True

    def __init__(self, config: SupervisedConfig):
        super().__init__()
        self.config = config
        self.classifier = nn.Linear(config.in_features, config.num_classes)

    def forward(self, batch: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = head_output(batch.imu, self.config.head, "supervised")
        if batch.labels is None:
            raise ComponentError("loss 'supervised' needs labels (batch.labels is None)")
        if features.shape[1] != self.config.in_features:
            raise ComponentError(
                f"loss 'supervised': in_features is {self.config.in_features} "
                f"but the encoder's '{self.config.head}' is {features.shape[1]}-d"
            )
        labels = batch.labels.to(features.device).long()
        if bool((labels >= self.config.num_classes).any()):
            raise DataError(
                f"loss 'supervised': a label is >= num_classes ({self.config.num_classes})"
            )
        known = labels >= 0
        logits = self.classifier(features.float())
        per_row = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        count = known.sum().clamp(min=1)
        value = torch.where(known, per_row, torch.zeros_like(per_row)).sum() / count
        correct = (logits.argmax(dim=1) == labels) & known
        terms = {"ce": value.detach(), "accuracy": correct.sum().float() / count}
        return value, terms
