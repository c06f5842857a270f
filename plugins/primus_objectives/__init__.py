"""Built-in plugin: the PRIMUS objectives (losses `infonce`, `ss`, `mm`, `nn`, `supervised`) and
the IMU augmentations (`scale-per-timestep`, `scale-per-channel`, `permute`, `jitter`, `rotate`, `negate`, `flip`,
`channel-shuffle`, `time-warp`). See docs/objectives.md."""

import primus_core

from .augment import AUGMENTATIONS, AugmentationPipeline, primus_pipeline
from .batch import StepBatch
from .infonce import InfoNCE, InfoNCEConfig, info_nce
from .neighbours import NearestNeighbourLoss, NNConfig
from .objectives import (
    MMConfig,
    MultimodalLoss,
    SelfSupervisedLoss,
    SSConfig,
    SupervisedConfig,
    SupervisedLoss,
)

__all__ = [
    "AugmentationPipeline",
    "InfoNCE",
    "InfoNCEConfig",
    "MMConfig",
    "MultimodalLoss",
    "NNConfig",
    "NearestNeighbourLoss",
    "SSConfig",
    "SelfSupervisedLoss",
    "StepBatch",
    "SupervisedConfig",
    "SupervisedLoss",
    "info_nce",
    "primus_pipeline",
]


@primus_core.hookimpl
def register_losses(register):
    register("infonce", InfoNCE, config=InfoNCEConfig)
    register("ss", SelfSupervisedLoss, config=SSConfig)
    register("mm", MultimodalLoss, config=MMConfig)
    register("nn", NearestNeighbourLoss, config=NNConfig)
    register("supervised", SupervisedLoss, config=SupervisedConfig)


@primus_core.hookimpl
def register_augmentations(register):
    for name, (factory, config) in AUGMENTATIONS.items():
        register(name, factory, config=config)
