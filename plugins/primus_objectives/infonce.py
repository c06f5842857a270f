"""Symmetric InfoNCE with a learnable temperature (PRIMUS.md, "Losses").

For queries q and keys k (row i of k is the positive of row i of q, every other row a negative):
    logits = normalise(q) normalise(k)^T / tau
    loss   = CE(logits, diag) + CE(logits^T, diag)     (each a mean over rows)
With a mask (rows that lack the modality), masked-out rows take no part at all: they are neither
queries nor keys (their columns leave the softmax), and each direction is the mean over the rows
that remain. So the masked loss is the plain loss of the sub-batch of rows with the modality, and
an all-zero mask gives exactly 0 (still attached to the graph, so backward works).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from primus_core.errors import ComponentError

# the logit of a removed key: far below any real logit, finite so that gradients stay finite
REMOVED_LOGIT = -1e9


class InfoNCEConfig(BaseModel):
    """Symmetric InfoNCE (both directions summed) with a learnable temperature."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.1, gt=0, description="initial temperature tau")
    learn_temperature: bool = Field(True, description="train tau (stored as log tau)")
    min_temperature: float = Field(
        0.01, gt=0, description="tau is clamped from below at this value (logits stay <= 1/min)"
    )


def _directional(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over (kept) rows of CE(row, its diagonal entry); masked columns are removed."""
    target = torch.arange(logits.shape[0], device=logits.device)
    if mask is None:
        return F.cross_entropy(logits, target)
    logits = logits.masked_fill(~mask.unsqueeze(0), REMOVED_LOGIT)
    per_row = F.cross_entropy(logits, target, reduction="none")
    kept = torch.where(mask, per_row, torch.zeros_like(per_row))
    return kept.sum() / mask.sum().clamp(min=1)


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: torch.Tensor | float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The symmetric InfoNCE of (N, D) queries against (N, D) keys; see the module docstring."""
    if query.dim() != 2 or query.shape != key.shape:
        raise ComponentError(
            f"infonce: query and key must both be (N, D) of the same shape, got "
            f"{tuple(query.shape)} and {tuple(key.shape)}"
        )
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.float(), dim=1)
    logits = q @ k.T / temperature
    if mask is not None:
        mask = mask.to(device=logits.device, dtype=torch.bool).reshape(-1)
        if mask.shape[0] != logits.shape[0]:
            raise ComponentError(
                f"infonce: mask has {mask.shape[0]} rows, the batch {logits.shape[0]}"
            )
    return _directional(logits, mask) + _directional(logits.T, mask)


class InfoNCE(nn.Module):
    """InfoNCE module: ``loss(query, key, mask=None) -> scalar``; owns its temperature."""

    modalities: tuple[str, ...] = ()
    needs_augmented_view = False
    needs_labels = False

    def __init__(self, config: InfoNCEConfig | None = None):
        super().__init__()
        self.config = config or InfoNCEConfig()
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(self.config.temperature)),
            requires_grad=self.config.learn_temperature,
        )

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=self.config.min_temperature)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if key is None or not isinstance(query, torch.Tensor):
            raise ComponentError(
                "'infonce' is a building block called as loss(query, key, mask); "
                "in a recipe use the objectives 'ss', 'mm' or 'nn'"
            )
        return info_nce(query, key, self.temperature, mask)
