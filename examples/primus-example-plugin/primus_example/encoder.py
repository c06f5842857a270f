"""The stats-mlp encoder itself: imported (with torch) only when an encoder is built."""

import torch
from torch import nn

from primus_core.config import IMUContract

from . import StatsMLPConfig


class StatsMLPEncoder(nn.Module):
    """A tiny encoder: per-channel statistics -> MLP -> emb (+ an mmcl head)."""

    def __init__(self, cfg: StatsMLPConfig):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * len(cfg.channels), cfg.hidden_size),
            nn.ReLU(),
            nn.Linear(cfg.hidden_size, cfg.hidden_size),
        )
        self.mmcl_head = nn.Linear(cfg.hidden_size, cfg.mmcl_dim) if cfg.mmcl_dim else None
        # every encoder carries its IMU contract and its output sizes
        self.imu_contract = IMUContract(
            channels=list(cfg.channels),
            units=list(cfg.units),
            rate_hz=cfg.rate_hz,
            window_samples=cfg.window_samples,
        )
        self.output_sizes = {"emb": cfg.hidden_size}
        if cfg.mmcl_dim:
            self.output_sizes["mmcl"] = cfg.mmcl_dim

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stats = torch.cat([x.mean(-1), x.std(-1), x.amin(-1), x.amax(-1)], dim=1)
        out = {"emb": self.mlp(stats)}
        if self.mmcl_head is not None:
            out["mmcl"] = self.mmcl_head(out["emb"])
        return out
