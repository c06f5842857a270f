"""The PRIMUS stacked-RNN IMU encoder (and its IMU2CLIP variant), weight-compatible with the
reference implementation (module names follow its state dict: backbone.0-5, ssl_head, mmcl_head)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from primus_core.config import PRIMUS_CHANNELS, PRIMUS_UNITS, IMUContract

from .gru import gru_sequence, supports_fused


class StackedRNNConfig(BaseModel):
    """Parameters of the stacked-RNN encoder; the defaults are PRIMUS's."""

    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(
        default_factory=lambda: list(PRIMUS_CHANNELS), description="channel names, in input order"
    )
    units: list[str] = Field(
        default_factory=lambda: list(PRIMUS_UNITS), description="unit of each channel"
    )
    rate_hz: float = Field(50.0, gt=0, description="sampling rate of the input")
    window_samples: int = Field(250, gt=0, description="samples per window")
    norm_groups: int = Field(2, gt=0, description="GroupNorm groups of the input (acc, gyro)")
    conv_channels: int = Field(32, gt=0, description="channels of the three conv blocks")
    pool: Literal["adaptive", "max"] = Field("adaptive", description="pooling after conv 3")
    pooled_bins: int = Field(32, gt=0, description="time bins after adaptive pooling")
    hidden_size: int = Field(512, gt=0, description="GRU hidden size = size of 'emb'")
    ssl_dim: int = Field(512, ge=0, description="size of the 'ssl' head (0: no head)")
    mmcl_dim: int = Field(512, ge=0, description="size of the 'mmcl' head (0: no head)")

    @model_validator(mode="after")
    def _check(self) -> StackedRNNConfig:
        if len(self.units) != len(self.channels):
            raise ValueError(f"{len(self.channels)} channels but {len(self.units)} units")
        if len(self.channels) % self.norm_groups:
            raise ValueError(
                f"norm_groups={self.norm_groups} must divide the {len(self.channels)} channels"
            )
        if conv_length(self.window_samples) < 1 or time_bins(self) < 1:
            raise ValueError(f"window_samples={self.window_samples} is too short for the convs")
        return self


class IMU2CLIPConfig(StackedRNNConfig):
    """The IMU2CLIP variant: 200 Hz, 1000 samples, max pooling, no heads."""

    rate_hz: float = Field(200.0, gt=0, description="sampling rate of the input")
    window_samples: int = Field(1000, gt=0, description="samples per window")
    pool: Literal["adaptive", "max"] = Field("max", description="pooling after conv 3")
    ssl_dim: int = Field(0, ge=0, description="size of the 'ssl' head (0: no head)")
    mmcl_dim: int = Field(0, ge=0, description="size of the 'mmcl' head (0: no head)")


def _conv_out(length: int, kernel: int, dilation: int = 2) -> int:
    return length - dilation * (kernel - 1)


def conv_length(window_samples: int) -> int:
    """Time steps after the third conv (before its pooling)."""
    length = _conv_out(window_samples, 10) // 3
    length = _conv_out(length, 5) // 3
    return _conv_out(length, 5)


def time_bins(cfg: StackedRNNConfig) -> int:
    """Length of the sequence the GRU sees as its feature size (see the 'quirk' in PRIMUS.md)."""
    return cfg.pooled_bins if cfg.pool == "adaptive" else conv_length(cfg.window_samples) // 3


class ConvBlock(nn.Module):
    """Conv1d without bias, then a pooling layer (``net.0`` is the conv, as in the reference)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: nn.Module):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, dilation=2, bias=False), pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StackedRNNEncoder(nn.Module):
    """PRIMUS stacked-RNN IMU encoder: GroupNorm, 3 dilated convs, GroupNorm, GRU, linear heads."""

    def __init__(self, cfg: StackedRNNConfig):
        super().__init__()
        self.config = cfg
        c, k = len(cfg.channels), cfg.conv_channels
        last_pool = (
            nn.AdaptiveAvgPool1d(cfg.pooled_bins) if cfg.pool == "adaptive" else nn.MaxPool1d(3)
        )
        self.backbone = nn.Sequential(
            nn.GroupNorm(cfg.norm_groups, c),
            ConvBlock(c, k, 10, nn.MaxPool1d(3)),
            ConvBlock(k, k, 5, nn.MaxPool1d(3)),
            ConvBlock(k, k, 5, last_pool),
            nn.GroupNorm(4 if k % 4 == 0 else 1, k),
            nn.GRU(time_bins(cfg), cfg.hidden_size, num_layers=1, batch_first=True),
        )
        self.ssl_head = nn.Linear(cfg.hidden_size, cfg.ssl_dim) if cfg.ssl_dim else None
        self.mmcl_head = nn.Linear(cfg.hidden_size, cfg.mmcl_dim) if cfg.mmcl_dim else None
        self.imu_contract = IMUContract(
            channels=cfg.channels,
            units=cfg.units,
            rate_hz=cfg.rate_hz,
            window_samples=cfg.window_samples,
        )
        self.output_sizes = {"emb": cfg.hidden_size}
        if cfg.ssl_dim:
            self.output_sizes["ssl"] = cfg.ssl_dim
        if cfg.mmcl_dim:
            self.output_sizes["mmcl"] = cfg.mmcl_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, samples) -> (batch, hidden) GRU last hidden state."""
        features = self.backbone[:5](x)  # (batch, conv_channels, time_bins)
        gru = self.backbone[5]  # the GRU scans the conv channels (reference quirk)
        if features.device.type == "cpu" and torch.is_grad_enabled() and supports_fused(gru):
            _, h_n = gru_sequence(gru, features)  # training on a CPU: hand-written backward
        else:
            _, h_n = gru(features)
        return h_n[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.embed(x)
        out = {"emb": emb}
        if self.ssl_head is not None:
            out["ssl"] = self.ssl_head(emb)
        if self.mmcl_head is not None:
            out["mmcl"] = self.mmcl_head(emb)
        return out

    def multiply_adds_per_window(self) -> int:
        """Forward multiply-adds of one window (convs, GRU, heads), for compute-bound figures."""
        cfg, total = self.config, 0
        length = cfg.window_samples
        c_in = len(cfg.channels)
        for kernel in (10, 5, 5):
            length = _conv_out(length, kernel)
            total += length * cfg.conv_channels * c_in * kernel
            c_in = cfg.conv_channels
            length //= 3
        gru = self.backbone[5]
        steps, h = cfg.conv_channels, cfg.hidden_size
        total += steps * 3 * h * (gru.input_size + h)
        total += cfg.hidden_size * (cfg.ssl_dim + cfg.mmcl_dim)
        return total
