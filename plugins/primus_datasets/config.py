"""Configs of the dataset adapters: pydantic only (no numpy, no torch), so that listing
components and checking recipes stay light. The adapters live in offline.py, egocentric.py and
realworld.py and are imported on first use."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from primus_core.data.catalog import DatasetInfo

from .common import RootConfig, WindowingConfig
from .info import INFOS


class HAPTConfig(RootConfig):
    """UCI HAPT: waist smartphone, acc + gyro, 50 Hz, 30 subjects, 6 activities + 6 transitions."""

    INFO: ClassVar[DatasetInfo] = INFOS["hapt"]  # read without importing the adapter

    include_transitions: bool = Field(True, description="keep the 6 postural transitions")


class WatchConfig(WindowingConfig):
    """seglearn watch exercises: smartwatch acc + gyro, 50 Hz, 7 shoulder exercises."""

    INFO: ClassVar[DatasetInfo] = INFOS["watch-exercises"]  # read without importing the adapter


class BasicMotionsConfig(WindowingConfig):
    """aeon BasicMotions: smartwatch acc + gyro, 10 Hz, 4 activities, 80 ten-second series."""

    INFO: ClassVar[DatasetInfo] = INFOS["basicmotions"]  # read without importing the adapter

    split: Literal["all", "train", "test"] = Field(
        "all", description="the official TRAIN/TEST files, or both"
    )


class DaphnetConfig(RootConfig):
    """Daphnet freezing of gait: 3 body accelerometers (mg), 64 Hz; unlabelled, for pretraining."""

    INFO: ClassVar[DatasetInfo] = INFOS["daphnet"]  # read without importing the adapter

    position: Literal["ankle", "thigh", "trunk"] = Field("trunk", description="which sensor")


class EgoExo4DConfig(RootConfig):
    """EgoExo4D atomic descriptions with Aria head IMU (licence-gated; local copy only)."""

    INFO: ClassVar[DatasetInfo] = INFOS["egoexo4d"]  # read without importing the adapter

    splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["train", "val"],
        description="annotations/atomic_descriptions_<split>.json to read; with "
        "annotations/splits.json, takes it assigns to another split are skipped",
    )
    annotators: Literal["all", "first"] = Field(
        "all", description="every annotation of a take, or the first only (the reference)"
    )
    include_rejected: bool = Field(False, description="keep annotations marked rejected")
    cleaning: Literal["primus", "reference"] = Field(
        "primus", description="narration cleaning: the project's, or the reference's exactly"
    )
    windowing: Literal["centred", "reference"] = Field(
        "centred",
        description="centred on the description and clamped to the take, or the reference's "
        "whole-second edge rule",
    )
    bad_windows: Path | None = Field(
        None,
        description="file of '<take_uid>_<start>_<end>' lines to leave out; 'reference': the "
        "82 windows the reference code excludes (shipped with primus)",
    )
    video: Literal["downscaled", "full"] = Field(
        "downscaled", description="prefer frame_aligned_videos/downscaled/448 when present"
    )
    imu_dir: Path | None = Field(
        None,
        description="user-extracted per-take IMU <take_uid>.npz|.csv (t_s on the take "
        "timeline); default ROOT/primus_imu when it exists",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="takes ('take_uid') or descriptions ('take_uid@seconds') to leave out",
    )
    missing_imu: Literal["error", "skip"] = Field(
        "skip", description="a take without any IMU: skipped (reported) or an error"
    )


class Ego4DConfig(RootConfig):
    """Ego4D narrations with the head IMU (licence-gated; local copy only)."""

    INFO: ClassVar[DatasetInfo] = INFOS["ego4d"]  # read without importing the adapter

    narration_passes: list[str] = Field(
        default_factory=lambda: ["narration_pass_1", "narration_pass_2"],
        description="which narration passes of narration.json to use",
    )
    scenarios: list[str] | None = Field(
        None, description="scenario classes (default: every scenario in ego4d.json)"
    )
    multi_scenario: Literal["skip", "first"] = Field(
        "skip",
        description="a video with several scenarios: skipped (the reference), or "
        "labelled with its first",
    )
    cleaning: Literal["primus", "reference"] = "primus"
    windowing: Literal["centred", "reference"] = "centred"
    bad_windows: Path | None = Field(
        None, description="'<video_uid>_<start>_<end>' lines (or a JSON list) to leave out"
    )
    missing_imu: Literal["error", "skip"] = Field(
        "skip", description="a has_imu video whose CSV is missing: skipped (reported) or an error"
    )


class RealWorldConfig(RootConfig):
    """RealWorld HAR: 15 subjects, 7 body positions, acc + gyro, 50 Hz, 8 activities."""

    INFO: ClassVar[DatasetInfo] = INFOS["realworld"]  # read without importing the adapter

    position: Literal["chest", "forearm", "head", "shin", "thigh", "upperarm", "waist"] = Field(
        "head", description="body position of the sensor"
    )
    max_member_mb: float = Field(
        256, gt=0, description="largest archive member read (uncompressed MB); larger is an error"
    )
