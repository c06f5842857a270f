"""Built-in plugin: the PRIMUS objectives (losses `infonce`, `ss`, `mm`, `nn`, `supervised`) and
the IMU augmentations (`scale-per-timestep`, `scale-per-channel`, `permute`, `jitter`, `rotate`,
`negate`, `flip`, `channel-shuffle`, `time-warp`). See docs/objectives.md.

Components are registered by name ("module:attr") with torch-free configs (``config.py``), so
that listing components and checking recipes never import torch; the classes below are imported
on first use."""

import importlib

import primus_core

from .config import (
    ChannelShuffleConfig,
    FlipConfig,
    InfoNCEConfig,
    JitterConfig,
    MMConfig,
    NegateConfig,
    NNConfig,
    PermuteConfig,
    RotateConfig,
    ScalePerChannelConfig,
    ScalePerTimestepConfig,
    SSConfig,
    SupervisedConfig,
    TimeWarpConfig,
)

# name -> module that defines it (these import torch, so only on first use)
LAZY = {
    "AugmentationPipeline": "augment",
    "primus_pipeline": "augment",
    "StepBatch": "batch",
    "InfoNCE": "infonce",
    "info_nce": "infonce",
    "NearestNeighbourLoss": "neighbours",
    "MultimodalLoss": "objectives",
    "SelfSupervisedLoss": "objectives",
    "SupervisedLoss": "objectives",
}

LOSSES = {
    "infonce": ("infonce:InfoNCE", InfoNCEConfig),
    "ss": ("objectives:SelfSupervisedLoss", SSConfig),
    "mm": ("objectives:MultimodalLoss", MMConfig),
    "nn": ("neighbours:NearestNeighbourLoss", NNConfig),
    "supervised": ("objectives:SupervisedLoss", SupervisedConfig),
}

AUGMENTATIONS = {
    "scale-per-timestep": ("augment:ScalePerTimestep", ScalePerTimestepConfig),
    "scale-per-channel": ("augment:ScalePerChannel", ScalePerChannelConfig),
    "permute": ("augment:Permute", PermuteConfig),
    "jitter": ("augment:Jitter", JitterConfig),
    "rotate": ("augment:Rotate", RotateConfig),
    "negate": ("augment:Negate", NegateConfig),
    "flip": ("augment:Flip", FlipConfig),
    "channel-shuffle": ("augment:ChannelShuffle", ChannelShuffleConfig),
    "time-warp": ("augment:TimeWarp", TimeWarpConfig),
}

__all__ = [
    "AUGMENTATIONS",
    "LOSSES",
    "InfoNCEConfig",
    "MMConfig",
    "NNConfig",
    "SSConfig",
    "SupervisedConfig",
    *LAZY,
]


def __getattr__(name):
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@primus_core.hookimpl
def register_losses(register):
    for name, (factory, config) in LOSSES.items():
        register(name, f"{__name__}.{factory}", config=config)


@primus_core.hookimpl
def register_augmentations(register):
    for name, (factory, config) in AUGMENTATIONS.items():
        register(name, f"{__name__}.{factory}", config=config)
