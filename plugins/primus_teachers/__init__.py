"""Built-in plugin: frozen teachers whose embeddings the IMU encoder is aligned to.

`clip-text` and `clip-video` (any Hugging Face CLIP checkpoint, default CLIP4Clip-WebVid150k),
`timm-video` (any timm image tower on frames) and `minilm-text` (all-MiniLM-L6-v2, offline).
See docs/teachers.md."""

import primus_core

from .base import Teacher, TeacherConfig
from .clip import CLIPTextConfig, CLIPTextTeacher, CLIPVideoConfig, CLIPVideoTeacher
from .minilm import MiniLMConfig, MiniLMTextTeacher
from .timm_video import TimmVideoConfig, TimmVideoTeacher
from .video import FrameTeacher, FrameTeacherConfig

__all__ = [
    "CLIPTextConfig",
    "CLIPTextTeacher",
    "CLIPVideoConfig",
    "CLIPVideoTeacher",
    "FrameTeacher",
    "FrameTeacherConfig",
    "MiniLMConfig",
    "MiniLMTextTeacher",
    "Teacher",
    "TeacherConfig",
    "TimmVideoConfig",
    "TimmVideoTeacher",
]


@primus_core.hookimpl
def register_teachers(register):
    register("clip-text", CLIPTextTeacher, config=CLIPTextConfig)
    register("clip-video", CLIPVideoTeacher, config=CLIPVideoConfig)
    register("timm-video", TimmVideoTeacher, config=TimmVideoConfig)
    register("minilm-text", MiniLMTextTeacher, config=MiniLMConfig)
