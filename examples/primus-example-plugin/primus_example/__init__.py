"""primus-example-plugin: registers the encoder `stats-mlp` and the command `primus stats-mlp-info`.

A third-party plugin is a module with functions decorated by ``primus_core.hookimpl``; the names
of the functions and of their arguments must match the hook specifications (primus_core/specs.py).
"""

import click
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

import primus_core
from primus_core.config import IMUContract


class StatsMLPConfig(BaseModel):
    """Per-channel mean/std/min/max statistics through a two-layer MLP."""

    model_config = ConfigDict(extra="forbid")  # typos in recipes become errors

    channels: int = Field(6, gt=0, description="input channels")
    rate_hz: float = Field(50.0, gt=0, description="sampling rate of the input")
    window_samples: int = Field(250, gt=0, description="samples per window")
    hidden_size: int = Field(64, gt=0, description="size of 'emb'")
    mmcl_dim: int = Field(32, ge=0, description="size of the 'mmcl' head (0: none)")


class StatsMLPEncoder(nn.Module):
    """A tiny encoder: per-channel statistics -> MLP -> emb (+ an mmcl head)."""

    def __init__(self, cfg: StatsMLPConfig):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * cfg.channels, cfg.hidden_size),
            nn.ReLU(),
            nn.Linear(cfg.hidden_size, cfg.hidden_size),
        )
        self.mmcl_head = nn.Linear(cfg.hidden_size, cfg.mmcl_dim) if cfg.mmcl_dim else None
        # every encoder carries its IMU contract and its output sizes
        self.imu_contract = IMUContract(
            channels=[f"ch{i}" for i in range(cfg.channels)],
            units=["a.u."] * cfg.channels,
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


@primus_core.hookimpl
def register_encoders(register):
    register("stats-mlp", StatsMLPEncoder, config=StatsMLPConfig)


@primus_core.hookimpl
def register_commands(cli):
    @cli.command("stats-mlp-info")
    def stats_mlp_info():
        """Parameter count of the default stats-mlp encoder."""
        encoder = primus_core.create("encoder", "stats-mlp")
        click.echo(sum(p.numel() for p in encoder.parameters()))
