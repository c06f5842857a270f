"""Configurations of the PRIMUS losses and the IMU augmentations: pydantic only, no torch, so that
listing components and checking recipes stay fast (the plugin registers the classes by name)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MaskedRows = Literal["negatives", "removed"]


TemperatureParam = Literal["tau", "log_tau"]


class InfoNCEConfig(BaseModel):
    """Symmetric InfoNCE (both directions summed) with a learnable temperature."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    temperature: float = Field(0.1, gt=0, description="initial temperature tau")
    learn_temperature: bool = Field(True, description="train tau")
    temperature_param: TemperatureParam = Field(
        "tau", description="what is learnt: tau itself (reference) or log tau (primus)"
    )
    min_temperature: float | None = Field(
        None, gt=0, description="clamp tau from below (None: unclamped, the reference)"
    )
    masked_rows: MaskedRows = Field(
        "negatives",
        description="rows outside the mask stay in the softmax as negatives (reference) "
        "or are removed from it (primus)",
    )


class ContrastiveConfig(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    ssl_coeff: float = Field(0.5, ge=0, le=1, description="c: SS terms weigh c, multimodal 1 - c")
    temperature: float = Field(0.1, gt=0, description="initial InfoNCE temperature")
    learn_temperature: bool = Field(True, description="train the temperature")
    temperature_param: TemperatureParam = Field(
        "tau", description="learn tau itself (reference) or log tau (primus)"
    )
    min_temperature: float | None = Field(
        None, gt=0, description="clamp tau from below (None: unclamped, the reference)"
    )
    masked_rows: MaskedRows = Field(
        "negatives",
        description="rows without the modality stay in the softmax as negatives (reference) "
        "or are removed from it (primus)",
    )

    def infonce(self):
        from .infonce import InfoNCE

        return InfoNCE(
            InfoNCEConfig(
                temperature=self.temperature,
                learn_temperature=self.learn_temperature,
                temperature_param=self.temperature_param,
                min_temperature=self.min_temperature,
                masked_rows=self.masked_rows,
            )
        )


class ModalitiesConfig(ContrastiveConfig):
    modalities: list[str] = Field(
        default_factory=lambda: ["text", "video"], description="teacher modalities to align with"
    )

    @field_validator("modalities")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("modalities must be distinct")
        for name in names:
            if not name.isidentifier() or name == "imu":
                raise ValueError(f"'{name}' is not a usable modality name")
        return names


class SSConfig(ContrastiveConfig):
    """L_SS = c * InfoNCE(ssl(x), ssl(aug(x))): the raw view against one augmented view."""

    def required_heads(self) -> set[str]:
        return {"ssl"}


class MMConfig(ModalitiesConfig):
    """L_MM = (1 - c) * sum over teacher modalities of masked InfoNCE(mmcl(x), E_m)."""

    def required_heads(self) -> set[str]:
        return {"mmcl"}


class SupervisedConfig(BaseModel):
    """Cross-entropy of a linear classifier on an encoder output against the labels (-1 ignored)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    num_classes: int = Field(..., ge=2, description="number of classes")
    in_features: int = Field(512, gt=0, description="size of the encoder output used")
    head: str = Field("emb", description="encoder output the classifier reads")

    def required_heads(self) -> set[str]:
        return {self.head}


class NNConfig(ModalitiesConfig):
    """L_NN: cross-modal nearest neighbours from FIFO queues of past windows (PRIMUS)."""

    queue_size: int = Field(8192, gt=0, description="slots in each FIFO queue")

    def required_heads(self) -> set[str]:
        return {"mmcl", "ssl"}  # the imu queue holds ssl outputs


# ---------------------------------------------------------------- configs
class ScaleConfig(BaseModel):
    """Multiply the window by factors drawn from N(1, sigma)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    sigma: float = Field(0.25, ge=0, description="std of the multiplicative factor")


class ScalePerTimestepConfig(ScaleConfig):
    """Multiply each time step of a window by one N(1, sigma) factor shared by all its channels
    (noise of shape (batch, 1, samples)): the reference's scaling."""


class ScalePerChannelConfig(ScaleConfig):
    """Multiply each channel of a window by one N(1, sigma) factor for the whole window (noise of
    shape (batch, channels, 1)): primus's scaling."""


class PermuteConfig(BaseModel):
    """Cut each window at random points and shuffle the segments (same order for all channels)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    segments: int = Field(5, ge=1, description="number of segments (segments - 1 random cuts)")


class JitterConfig(BaseModel):
    """Add Gaussian noise N(0, sigma) to every value."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    sigma: float = Field(0.1, ge=0, description="std of the additive noise")


class RotateConfig(BaseModel):
    """Apply one random 3-D rotation per window to every channel triple (acc and gyro alike)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    groups: list[list[int]] = Field(
        default_factory=lambda: [[0, 1, 2], [3, 4, 5]],
        description="channel triples (x, y, z) that rotate together",
    )

    @field_validator("groups")
    @classmethod
    def _triples(cls, groups: list[list[int]]) -> list[list[int]]:
        if not groups or any(len(g) != 3 for g in groups):
            raise ValueError("each group must list exactly 3 channel indices")
        flat = [i for g in groups for i in g]
        if len(set(flat)) != len(flat) or min(flat) < 0:
            raise ValueError("channel indices must be distinct and non-negative")
        return groups


class ProbabilityConfig(BaseModel):
    """Per-window probability of applying the transform."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    p: float = Field(1.0, ge=0, le=1, description="probability per window")


class NegateConfig(ProbabilityConfig):
    """Multiply the window by -1 (with probability p per window)."""


class FlipConfig(ProbabilityConfig):
    """Reverse the window in time (with probability p per window)."""


class ChannelShuffleConfig(ProbabilityConfig):
    """Permute the channels of each window at random (with probability p per window)."""


class TimeWarpConfig(BaseModel):
    """Resample each window along a smooth random monotone time warp (speed N(1, sigma) at knots)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    sigma: float = Field(0.2, ge=0, description="std of the local speed at the knots")
    knots: int = Field(4, ge=1, description="interior knots of the speed curve")
