"""Symmetric InfoNCE with a learnable temperature (PRIMUS.md, "Losses"; docs/fidelity.md).

For queries q and keys k (row i of k is the positive of row i of q, every other row a negative):
    logits = normalise(q) normalise(k)^T / tau
    loss   = CE(logits, diag) + CE(logits^T, diag)     (each a mean over rows)

With a mask (rows that lack the modality), ``masked_rows`` chooses what the other rows see:
- ``negatives`` (the reference, lib/loss.py ``info_nce``): every row stays in both softmaxes, so a
  masked row still acts as a negative for the others; each direction's per-row losses are averaged
  over the rows whose mask is set.
- ``removed`` (primus): masked rows take no part at all: they are neither queries nor keys (their
  columns leave the softmax), so the loss is the plain loss of the sub-batch of kept rows.
Either way an all-zero mask gives exactly 0 (still attached to the graph, so backward works).

The temperature is learnt as tau itself, unclamped (``temperature_param: tau``, the reference), or
as log tau clamped from below at ``min_temperature`` (``log_tau``, primus).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from primus_core.errors import ComponentError

from .config import InfoNCEConfig, MaskedRows

# the logit of a removed key: far below any real logit, finite so that gradients stay finite
REMOVED_LOGIT = -1e9


def _directional(logits: torch.Tensor, mask: torch.Tensor | None, remove: bool) -> torch.Tensor:
    """Mean over the rows with mask set of CE(row, its diagonal entry); with ``remove`` the
    masked columns leave the softmax too."""
    target = torch.arange(logits.shape[0], device=logits.device)
    if mask is None:
        return F.cross_entropy(logits, target)
    if remove:
        logits = logits.masked_fill(~mask.unsqueeze(0), REMOVED_LOGIT)
    per_row = F.cross_entropy(logits, target, reduction="none")
    kept = torch.where(mask, per_row, torch.zeros_like(per_row))
    return kept.sum() / mask.sum().clamp(min=1)


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: torch.Tensor | float,
    mask: torch.Tensor | None = None,
    masked_rows: MaskedRows = "negatives",
) -> torch.Tensor:
    """The symmetric InfoNCE of (N, D) queries against (N, D) keys; see the module docstring."""
    if query.dim() != 2 or query.shape != key.shape:
        raise ComponentError(
            f"infonce: query and key must both be (N, D) of the same shape, got "
            f"{tuple(query.shape)} and {tuple(key.shape)}"
        )
    if masked_rows not in ("negatives", "removed"):
        raise ComponentError(
            f"infonce: masked_rows must be 'negatives' or 'removed', not {masked_rows!r}"
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
    remove = masked_rows == "removed"
    return _directional(logits, mask, remove) + _directional(logits.T, mask, remove)


class InfoNCE(nn.Module):
    """InfoNCE module: ``loss(query, key, mask=None) -> scalar``; owns its temperature."""

    modalities: tuple[str, ...] = ()
    needs_augmented_view = False
    needs_labels = False

    def __init__(self, config: InfoNCEConfig | None = None):
        super().__init__()
        self.config = config or InfoNCEConfig()
        start = self.config.temperature
        if self.config.temperature_param == "log_tau":
            start = math.log(start)
        self.raw_temperature = nn.Parameter(
            torch.tensor(float(start)), requires_grad=self.config.learn_temperature
        )

    @property
    def temperature(self) -> torch.Tensor:
        tau = self.raw_temperature
        if self.config.temperature_param == "log_tau":
            tau = tau.exp()
        if self.config.min_temperature is not None:
            tau = tau.clamp(min=self.config.min_temperature)
        return tau

    def forward(
        self, query: torch.Tensor, key: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if key is None or not isinstance(query, torch.Tensor):
            raise ComponentError(
                "'infonce' is a building block called as loss(query, key, mask); "
                "in a recipe use the objectives 'ss', 'mm' or 'nn'"
            )
        return info_nce(query, key, self.temperature, mask, self.config.masked_rows)
