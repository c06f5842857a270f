from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

import primus_core
from conftest import plugin_in_process
from primus_core.components import KINDS, list_components
from primus_core.errors import ComponentError


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = 2.0


class Scale:
    """A component given as a callable (a class object), not as a 'module:attr' name."""

    def __init__(self, config: ScaleConfig):
        self.config = config


@pytest.fixture
def factory_plugin():
    """A plugin registered in this process (as an entry point would be), removed afterwards."""

    def register_augmentations(register):
        register("scale-by-class", Scale, config=ScaleConfig)
        register("ghost", "no_such_module_xyz:Thing", config=ScaleConfig)
        register("no-attr", "primus_core.components:NoSuchFactory")

    with plugin_in_process("factorytest", register_augmentations=register_augmentations):
        yield


def test_list_components_covers_every_kind():
    comps = list_components()
    assert {c.kind for c in comps} <= set(KINDS)
    names = {(c.kind, c.name) for c in comps}
    assert ("encoder", "stacked-rnn") in names and ("encoder", "stacked-rnn-imu2clip") in names
    encoders = list_components("encoder")
    assert all(c.kind == "encoder" for c in encoders)
    rnn = next(c for c in encoders if c.name == "stacked-rnn")
    params = {p["name"]: p for p in rnn.params()}
    assert params["hidden_size"]["default"] == 512 and params["hidden_size"]["type"] == "int"
    assert rnn.plugin == "stackrnn"


def test_unknown_name_lists_names_and_suggests_closest():
    with pytest.raises(ComponentError) as info:
        primus_core.create("encoder", "stacked-rn")
    message = str(info.value)
    assert "did you mean 'stacked-rnn'?" in message and "stacked-rnn-imu2clip" in message


def test_unknown_kind_and_bad_params():
    with pytest.raises(ComponentError, match="unknown component kind 'encodr'"):
        primus_core.create("encodr", "x")
    with pytest.raises(
        ComponentError, match=r"pool: Input should be 'adaptive' or 'max'.*got 'avg'"
    ):
        primus_core.create("encoder", "stacked-rnn", pool="avg")
    with pytest.raises(
        ComponentError, match=r"stacked-rnn.hiden_size: Extra inputs are not permitted"
    ):
        primus_core.create("encoder", "stacked-rnn", hiden_size=3)


def test_components_list_cli(cli):
    import json

    rows = json.loads(cli("components", "list", "--kind", "encoder", "--json").out)
    assert {r["name"] for r in rows} >= {"stacked-rnn", "stacked-rnn-imu2clip"}
    assert all(r["plugin"] == "stackrnn" for r in rows if r["name"].startswith("stacked"))
    text = cli("components", "list", "--kind", "encoder").out
    assert "hidden_size: int = 512" in text
    result = cli("components", "list", "--kind", "nope", expect=2)
    assert "Invalid value for '--kind'" in result.err


def test_a_factory_that_does_not_import_names_the_component_and_plugin(factory_plugin):
    """Registering a name that does not import is accepted (nothing is imported at listing);
    building it is one ComponentError naming the kind, the component and the plugin."""
    names = {c.name for c in list_components("augmentation")}
    assert {"ghost", "no-attr", "scale-by-class"} <= names
    with pytest.raises(ComponentError) as info:
        primus_core.create("augmentation", "ghost")
    assert str(info.value).startswith(
        "augmentation 'ghost' (plugin 'factorytest'): cannot import its factory "
        "'no_such_module_xyz:Thing': ModuleNotFoundError"
    )
    with pytest.raises(ComponentError, match=r"augmentation 'no-attr' \(plugin 'factorytest'\)"):
        primus_core.create("augmentation", "no-attr")


def test_a_callable_factory_still_works(factory_plugin):
    """A class object given as the factory is called with the validated config."""
    built = primus_core.create("augmentation", "scale-by-class", factor=3)
    assert type(built) is Scale and built.config == ScaleConfig(factor=3.0)
    assert primus_core.create("augmentation", "scale-by-class").config.factor == 2.0
    with pytest.raises(ComponentError, match="scale-by-class.factor"):
        primus_core.create("augmentation", "scale-by-class", factor="big")
    comp = next(c for c in list_components("augmentation") if c.name == "scale-by-class")
    assert comp.plugin == "factorytest" and comp.description.startswith("A component given")


def test_the_lazy_re_export_keeps_from_plugin_import_class_working():
    """``from primus_stackrnn import StackedRNNEncoder`` is the class its registered name
    ('primus_stackrnn.encoder:StackedRNNEncoder') imports."""
    import importlib

    from primus_stackrnn import StackedRNNEncoder

    assert StackedRNNEncoder is importlib.import_module("primus_stackrnn.encoder").StackedRNNEncoder
    encoder = primus_core.create("encoder", "stacked-rnn", hidden_size=8, ssl_dim=0, mmcl_dim=0)
    assert type(encoder) is StackedRNNEncoder
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        importlib.import_module("primus_stackrnn").Nope  # noqa: B018


ADAPTER_SOURCE = """
from primus_core.data.catalog import DatasetInfo


class Adapter:
    info = DatasetInfo(
        name="adapter-info",
        description="described by its adapter",
        placement="wrist",
        native_rate_hz=33.0,
        channels=["acc_x", "acc_y", "acc_z"],
        units=["m/s^2", "m/s^2", "m/s^2"],
        licence="cc0",
        citation="none",
        url="https://example.invalid/adapter",
        labelled=True,
        classes=["a", "b", "c", "d"],
    )
"""


def test_data_list_imports_the_adapter_only_for_a_config_without_info(tmp_path, monkeypatch, cli):
    """A dataset config without `INFO`: `data list` imports the adapter for its `info`. With
    `INFO` on the config, the adapter (here a module that does not exist) is never imported."""
    import json
    import sys

    from primus_core.data.catalog import DatasetInfo

    (tmp_path / "info_test_adapter.py").write_text(ADAPTER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "info_test_adapter", raising=False)

    class NoInfo(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class WithInfo(BaseModel):
        model_config = ConfigDict(extra="forbid")
        INFO: ClassVar[DatasetInfo] = DatasetInfo(
            name="config-info",
            description="described by its config",
            placement="ankle",
            native_rate_hz=20.0,
            channels=["acc_x"],
            units=["m/s^2"],
            licence="cc0",
            citation="none",
            url="https://example.invalid/config",
            labelled=False,
            gated=True,
        )

    def register_datasets(register):
        register("adapter-info", "info_test_adapter:Adapter", config=NoInfo)
        register("config-info", "no_such_adapter_module_xyz:Adapter", config=WithInfo)

    with plugin_in_process("datainfotest", register_datasets=register_datasets):
        rows = {r["name"]: r for r in json.loads(cli("data", "list", "--json").out)}
    assert "info_test_adapter" in sys.modules  # imported for its info
    assert "no_such_adapter_module_xyz" not in sys.modules
    adapter = rows["adapter-info"]
    assert adapter["plugin"] == "datainfotest"
    assert adapter["description"] == "described by its adapter"
    assert (adapter["placement"], adapter["native_rate_hz"], adapter["classes"]) == (
        "wrist",
        33.0,
        4,
    )
    assert adapter["url"] == "https://example.invalid/adapter" and adapter["gated"] is False
    config = rows["config-info"]
    assert config["description"] == "described by its config"
    assert (config["placement"], config["native_rate_hz"], config["gated"]) == ("ankle", 20.0, True)
    assert config["labelled"] is False and config["classes"] == 0
