"""Built-in plugin: the PRIMUS stacked-RNN encoder (`stacked-rnn`) and its IMU2CLIP variant
(`stacked-rnn-imu2clip`).

The encoder is registered by name ("module:attr") with a torch-free config, so that listing
components and checking recipes never import torch; ``create()`` imports it on first use."""

import primus_core

from .config import IMU2CLIPConfig, StackedRNNConfig

__all__ = ["IMU2CLIPConfig", "StackedRNNConfig", "StackedRNNEncoder"]


def __getattr__(name):  # the encoder class imports torch: only when asked for
    if name == "StackedRNNEncoder":
        from .encoder import StackedRNNEncoder

        return StackedRNNEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@primus_core.hookimpl
def register_encoders(register):
    register("stacked-rnn", "primus_stackrnn.encoder:StackedRNNEncoder", config=StackedRNNConfig)
    register(
        "stacked-rnn-imu2clip",
        "primus_stackrnn.encoder:StackedRNNEncoder",
        config=IMU2CLIPConfig,
    )
