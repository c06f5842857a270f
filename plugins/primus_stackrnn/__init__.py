"""Built-in plugin: the PRIMUS stacked-RNN encoder (`stacked-rnn`) and its IMU2CLIP variant
(`stacked-rnn-imu2clip`)."""

import primus_core

from .encoder import IMU2CLIPConfig, StackedRNNConfig, StackedRNNEncoder

__all__ = ["IMU2CLIPConfig", "StackedRNNConfig", "StackedRNNEncoder"]


@primus_core.hookimpl
def register_encoders(register):
    register("stacked-rnn", StackedRNNEncoder, config=StackedRNNConfig)
    register("stacked-rnn-imu2clip", StackedRNNEncoder, config=IMU2CLIPConfig)
