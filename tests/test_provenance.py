"""Model directories record which plugin distribution and version provided the encoder; loading
one without that plugin says what to install."""

from __future__ import annotations

import json
import types

import pytest

import primus_core
from primus_core.components import reset
from primus_core.errors import ModelDirError
from primus_core.plugins import PluginInfo, get_host
from primus_core.zoo.modeldir import load_model_dir, save_model_dir

SMALL = {"conv_channels": 8, "hidden_size": 16, "ssl_dim": 0, "mmcl_dim": 8}


def install_plugin() -> None:
    """A third-party plugin as its entry point would register it, with its distribution."""
    module = types.ModuleType("provenance_test_plugin")

    @primus_core.hookimpl
    def register_encoders(register):
        from primus_stackrnn import StackedRNNConfig

        register("prov-rnn", "primus_stackrnn.encoder:StackedRNNEncoder", config=StackedRNNConfig)

    module.register_encoders = register_encoders
    reset()
    info = PluginInfo("provtest", module.__name__, distribution="primus-prov-test", version="1.2.3")
    get_host().register(module, info)


def test_provenance_round_trip_with_the_plugin_installed_then_uninstalled(tmp_path):
    install_plugin()
    try:
        encoder = primus_core.create("encoder", "prov-rnn", **SMALL)
        out = save_model_dir(encoder, tmp_path / "m", encoder_type="prov-rnn", encoder_params=SMALL)
        config = json.loads((out / "config.json").read_text())
        assert config["encoder"]["provenance"] == {
            "kind": "encoder",
            "name": "prov-rnn",
            "plugin": "provtest",
            "distribution": "primus-prov-test",
            "version": "1.2.3",
        }
        assert "primus-prov-test 1.2.3" in (out / "README.md").read_text()
        load_model_dir(out)  # installed: loads
    finally:
        reset()  # uninstalled: only the entry-point plugins remain
    with pytest.raises(
        ModelDirError, match=r"unknown encoder 'prov-rnn'.*pip install 'primus-prov-test==1\.2\.3'"
    ):
        load_model_dir(tmp_path / "m")


def test_built_in_components_record_their_distribution(tmp_path):
    encoder = primus_core.create("encoder", "stacked-rnn", **SMALL)
    out = save_model_dir(encoder, tmp_path / "m", encoder_type="stacked-rnn", encoder_params=SMALL)
    origin = json.loads((out / "config.json").read_text())["encoder"]["provenance"]
    assert origin["plugin"] == "stackrnn" and origin["distribution"] == "primus-zoo"
