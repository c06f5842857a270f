"""The stacked-RNN encoder's configuration: pydantic only, no torch, so that listing components
and checking recipes stay fast (the plugin registers the encoder class by name)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from primus_core.config import PRIMUS_CHANNELS, PRIMUS_UNITS


class StackedRNNConfig(BaseModel):
    """Parameters of the stacked-RNN encoder; the defaults are PRIMUS's."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

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
