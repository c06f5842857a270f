"""Pydantic models shared by the core: the IMU contract, component references, recipes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PRIMUS_CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
PRIMUS_UNITS = ["m/s^2"] * 3 + ["rad/s"] * 3


class IMUContract(BaseModel):
    """What an encoder expects of a window: channels (names and units), rate and length."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, allow_inf_nan=False)

    channels: list[str] = Field(default_factory=lambda: list(PRIMUS_CHANNELS))
    units: list[str] = Field(default_factory=lambda: list(PRIMUS_UNITS))
    rate_hz: float = Field(50.0, gt=0)
    window_samples: int = Field(250, gt=0)

    @model_validator(mode="after")
    def _units_match_channels(self) -> IMUContract:
        if len(self.units) != len(self.channels):
            raise ValueError(
                f"{len(self.channels)} channels but {len(self.units)} units were given"
            )
        return self

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.rate_hz

    def describe(self) -> str:
        return (
            f"{self.num_channels} channels ({', '.join(self.channels)}), {self.rate_hz:g} Hz, "
            f"{self.window_samples} samples ({self.window_seconds:g} s)"
        )


class ComponentRef(BaseModel):
    """``{type: <registered name>, ...params}``: the parameters are validated by the component."""

    model_config = ConfigDict(defer_build=True, extra="allow")

    type: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossRef(ComponentRef):
    model_config = ConfigDict(defer_build=True, extra="allow", allow_inf_nan=False)

    weight: float = Field(1.0, ge=0, description="factor of this loss in the total (0 = off)")


SHARED_LOCATIONS = ("root", "imu_dir")


class DataConfig(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", allow_inf_nan=False)

    pretrain: list[ComponentRef] = Field(default_factory=list)
    validation: list[ComponentRef] | None = Field(
        None,
        description="datasets to validate on (e.g. EgoExo4D's official val split) instead of "
        "holding out val_fraction of the pretraining subjects",
    )
    val_fraction: float = Field(0.1, ge=0, lt=1)
    include_classes: list[str] | None = Field(
        None, description="keep only windows of these class names (a corpus of chosen diversity)"
    )
    max_windows: int | None = Field(
        None, gt=0, description="keep a seeded random subset of this many windows (corpus size)"
    )

    @model_validator(mode="after")
    def _validation_shares_locations(self) -> DataConfig:
        """A validation entry of the same dataset type as a pretraining entry takes its local
        paths (``root``, ``imu_dir``) from it unless it sets them: one ``--set
        data.pretrain.<type>.root=...`` points both at the same download."""
        if not self.validation:
            return self
        by_type = {ref.type: ref.params for ref in self.pretrain}
        filled = []
        for ref in self.validation:
            params = ref.params
            for key in SHARED_LOCATIONS:
                source = by_type.get(ref.type, {})
                if params.get(key) is None and source.get(key) is not None:
                    params[key] = source[key]
            filled.append(ComponentRef(type=ref.type, **params))
        self.validation = filled
        return self


class TrainConfig(BaseModel):
    """Training settings; the defaults are the reference's (docs/fidelity.md)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", allow_inf_nan=False)

    batch_size: int = Field(16, gt=0)
    batch_size_per: Literal["device", "global"] = Field(
        "device", description="batch_size counts the windows of one process (reference) or of all"
    )
    epochs: int = Field(15, gt=0)
    max_steps: int | None = Field(None, gt=0)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    seed: int = Field(1234, ge=0, le=2**32 - 1, description="numpy and torch seeds take 32 bits")
    device: str = "auto"
    amp: bool = Field(False, description="bf16 autocast on CUDA (fp16 where bf16 is missing)")
    tf32: bool = Field(False, description="TF32 matmuls and convolutions on CUDA")
    compile: bool = False
    step: Literal["eager", "static", "graph"] = Field(
        "eager",
        description="the training step: eager, static (fixed shapes, no host sync, NN queues "
        "updated inside) or graph (the static step captured in a CUDA graph; CUDA only)",
    )
    warmup_steps: int = Field(0, ge=0)
    checkpoint_every: int = Field(500, gt=0)
    log_every: int = Field(10, gt=0)
    gather_negatives: bool = Field(
        False, description="under DDP, contrast against the negatives of every process"
    )
    temperatures: Literal["shared", "per-loss"] = Field(
        "shared",
        description="one multimodal and one self-supervised temperature shared by every loss "
        "(reference), or one per InfoNCE term (primus)",
    )


class Recipe(BaseModel):
    """A named composition of components and training settings (see registry.yaml)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    name: str
    description: str = ""
    encoder: ComponentRef
    teachers: list[ComponentRef] = Field(default_factory=list)
    losses: list[LossRef] = Field(default_factory=list)
    augmentations: list[ComponentRef] = Field(default_factory=list)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
