"""Configurations of the built-in teachers: pydantic only, no torch, so that listing components
and checking recipes stay fast (the plugin registers the teacher classes by name)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TeacherConfig(BaseModel):
    """Settings every teacher takes."""

    model_config = ConfigDict(defer_build=True, extra="forbid", protected_namespaces=())

    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda:0'")
    batch_size: int = Field(64, gt=0, description="inputs per forward pass")


class FrameTeacherConfig(TeacherConfig):
    fps: float = Field(
        10.0, gt=0, description="frames embedded per second of clip (50 for a 5 s window)"
    )
    source_fps: float | None = Field(
        None, gt=0, description="rate of given frame lists/folders; None: already at fps"
    )
    max_frames: int | None = Field(
        None, gt=0, description="at most this many frames per clip (evenly spaced)"
    )
    frame_batch: int = Field(64, gt=0, description="frames per forward pass of the image tower")
    workers: int | None = Field(
        None,
        ge=0,
        description="processes decoding video files (0: this one; none: CPUs - 1, at most 32)",
    )
    skip_bad_videos: bool = Field(
        False, description="a video that cannot be read masks its windows instead of stopping"
    )


# PRIMUS's teacher: CLIP4Clip fine-tuned on WebVid-150k (ViT-B/32 towers, 512-d projections).
DEFAULT_MODEL_ID = "Searchium-ai/clip4clip-webvid150k"


# Pinned commit of DEFAULT_MODEL_ID (a public project's pin; this sandbox cannot reach the Hub to
# check it - override with revision=... if the Hub answers 404 for it).
DEFAULT_REVISION = "d2f89850fec28ac1e5cd27db2f0b76d7491e61ce"


class CLIPTextConfig(TeacherConfig):
    """CLIP text tower with projection (default: CLIP4Clip-WebVid150k, 512-d)."""

    model_id: str = Field(DEFAULT_MODEL_ID, description="Hub repo id or local CLIP folder")
    revision: str = Field(DEFAULT_REVISION, description="commit sha (or branch/tag) on the Hub")
    max_length: int = Field(77, gt=0, description="tokens per text (longer texts are truncated)")


class CLIPVideoConfig(FrameTeacherConfig):
    """CLIP image tower with projection on frames, averaged (default: CLIP4Clip-WebVid150k)."""

    model_id: str = Field(DEFAULT_MODEL_ID, description="Hub repo id or local CLIP folder")
    revision: str = Field(DEFAULT_REVISION, description="commit sha (or branch/tag) on the Hub")


class MiniLMConfig(TeacherConfig):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), shipped in a PyPI package: works offline."""

    max_length: int = Field(256, gt=0, description="word pieces per text (longer are truncated)")


DEFAULT_MODEL = "hf-hub:timm/vit_base_patch32_clip_224.openai"


class TimmVideoConfig(FrameTeacherConfig):
    """A timm image tower on frames, averaged (default: OpenAI CLIP ViT-B/32 image tower)."""

    model_name: str = Field(
        DEFAULT_MODEL, description="timm name, or 'hf-hub:org/name[@revision]' for Hub weights"
    )
    revision: str | None = Field(None, description="Hub commit for an hf-hub: name without '@'")
    pretrained: bool = Field(True, description="load the pretrained weights")
    keep_head: bool = Field(
        True,
        description="keep the model's head (a CLIP tower's projection); false: pooled features",
    )
