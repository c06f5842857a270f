"""What the trainer hands every loss at each step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepBatch:
    """Encoder outputs and targets of one training step.

    ``gathered`` is True when the trainer has already all-gathered the batch across
    torch.distributed ranks (every rank then sees the global batch, and losses must not gather
    again)."""

    imu: dict[str, torch.Tensor]
    imu_aug: dict[str, torch.Tensor] | None = None
    teachers: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: torch.Tensor | None = None
    gathered: bool = False

    @property
    def size(self) -> int:
        return next(iter(self.imu.values())).shape[0]
