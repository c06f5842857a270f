"""Built-in plugin: frozen teachers whose embeddings the IMU encoder is aligned to.

`clip-text` and `clip-video` (any Hugging Face CLIP checkpoint, default CLIP4Clip-WebVid150k),
`timm-video` (any timm image tower on frames) and `minilm-text` (all-MiniLM-L6-v2, offline).
See docs/teachers.md.

Teachers are registered by name ("module:attr") with torch-free configs (``config.py``), so that
listing components and checking recipes never import torch or transformers; the classes below
are imported on first use."""

import importlib

import primus_core

from .config import (
    CLIPTextConfig,
    CLIPVideoConfig,
    FrameTeacherConfig,
    MiniLMConfig,
    TeacherConfig,
    TimmVideoConfig,
)

# name -> module that defines it (these import torch, so only on first use)
LAZY = {
    "Teacher": "base",
    "CLIPTextTeacher": "clip",
    "CLIPVideoTeacher": "clip",
    "FrameTeacher": "video",
    "MiniLMTextTeacher": "minilm",
    "TimmVideoTeacher": "timm_video",
}

__all__ = [
    "CLIPTextConfig",
    "CLIPVideoConfig",
    "FrameTeacherConfig",
    "MiniLMConfig",
    "TeacherConfig",
    "TimmVideoConfig",
    *LAZY,
]


def __getattr__(name):
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@primus_core.hookimpl
def register_teachers(register):
    register("clip-text", "primus_teachers.clip:CLIPTextTeacher", config=CLIPTextConfig)
    register("clip-video", "primus_teachers.clip:CLIPVideoTeacher", config=CLIPVideoConfig)
    register("timm-video", "primus_teachers.timm_video:TimmVideoTeacher", config=TimmVideoConfig)
    register("minilm-text", "primus_teachers.minilm:MiniLMTextTeacher", config=MiniLMConfig)
