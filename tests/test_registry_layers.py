"""The layered registry: built-in, $PRIMUS_HOME/registry.yaml, PRIMUS_REGISTRY files, plugins;
later layers add and override by name; a bad entry is reported and skipped."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import yaml

import primus_core
from conftest import plugin_in_process
from primus_core.components import reset
from primus_core.errors import RecipeError
from primus_core.registry.layers import load_layers
from primus_core.zoo.hub import (
    PushResult,
    ZooEntry,
    ZooError,
    get_entry,
    pull,
    registry_snippet,
    zoo_entries,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "zoo" / "primus-hapt-stackrnn"


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def shipped_entry(shipped: str) -> dict:
    body = dict(yaml.safe_load((REPO / "registry.yaml").read_text())["zoo"]["primus-hapt-stackrnn"])
    body["source"] = {"shipped": shipped}
    return body


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PRIMUS_HOME", str(home))
    return home


@pytest.fixture
def plugin():
    """A plugin registered in this process (as an entry point would be), removed afterwards."""

    def register_recipes(register):
        register("plugin-recipe", {"extends": "primus-hapt", "description": "from a plugin"})
        register("primus-hapt", {"extends": "simclr", "description": "plugin override"})

    def register_zoo(register):
        register("plugin-model", shipped_entry("primus-hapt-stackrnn"))

    # its folder is the base of relative shipped paths
    with plugin_in_process(
        "layers-test",
        REPO / "zoo" / "x.py",
        register_recipes=register_recipes,
        register_zoo=register_zoo,
    ) as module:
        yield module


def test_user_file_and_primus_registry_layers_add_and_override(home, tmp_path, monkeypatch):
    write(
        home / "registry.yaml",
        {"recipes": {"mine": {"extends": "primus-hapt", "description": "user recipe"}}},
    )
    one = write(
        tmp_path / "a" / "registry.yaml",
        {
            "recipes": {"simclr-hapt": {"extends": "mine", "description": "overridden"}},
            "zoo": {"overlay-model": shipped_entry("models/m")},
        },
    )
    shutil.copytree(SHIPPED, one.parent / "models" / "m")
    two = write(tmp_path / "b.yaml", {"recipes": {"mine": {"extends": "supervised-hapt"}}})
    monkeypatch.setenv("PRIMUS_REGISTRY", os.pathsep.join([str(one), str(two)]))

    layers = load_layers()
    assert layers.problems == []
    assert layers.recipes["primus"].layer == "built-in"  # the built-ins stay
    assert layers.recipes["simclr-hapt"].source == str(one)
    assert layers.recipes["mine"].source == str(two)  # the last layer wins
    assert primus_core.load_recipe("simclr-hapt").description == "overridden"
    assert primus_core.load_recipe("mine").losses[0].type == "supervised"
    # shipped: resolves against the file that declares it, not the built-in registry's folder
    assert get_entry("overlay-model")._base_dir == one.parent
    assert (pull("overlay-model") / "model.safetensors").is_file()
    assert "primus-hapt-stackrnn" in zoo_entries()


def test_list_commands_report_the_layer(home, tmp_path, monkeypatch, cli):
    write(home / "registry.yaml", {"recipes": {"mine": {"extends": "primus-hapt"}}})
    rows = {r["name"]: r for r in json.loads(cli("recipes", "list", "--json").out)}
    assert rows["mine"]["layer"] == "user" and rows["primus"]["layer"] == "built-in"
    assert rows["mine"]["ready"]
    zoo = {r["name"]: r for r in json.loads(cli("zoo", "list", "--json").out)}
    assert zoo["primus-hapt-stackrnn"]["layer"] == "built-in"


def test_hook_register_recipes_adds_a_layer(home, plugin):
    assert primus_core.load_recipe("plugin-recipe").description == "from a plugin"
    assert primus_core.load_recipe("primus-hapt").description == "plugin override"
    assert primus_core.load_recipe("primus-hapt").data.pretrain[0].type == "egoexo4d"
    assert load_layers().recipes["plugin-recipe"].layer == "plugin layers-test"


def test_hook_register_zoo_adds_a_layer(home, plugin, cli):
    entry = get_entry("plugin-model")
    assert entry._base_dir == REPO / "zoo"  # the plugin module's folder
    assert (pull("plugin-model") / "config.json").is_file()
    assert "plugin-model" in cli("zoo", "list").out


def test_a_broken_entry_is_skipped_and_reported(home, tmp_path, monkeypatch, caplog, cli):
    bad = shipped_entry("nowhere")
    del bad["licence"]
    overlay = write(
        tmp_path / "bad.yaml",
        {"recipes": {"not-a-mapping": [1, 2]}, "zoo": {"no-licence": bad}},
    )
    broken_file = tmp_path / "broken.yaml"
    broken_file.write_text("recipes: [\n", encoding="utf-8")
    monkeypatch.setenv("PRIMUS_REGISTRY", os.pathsep.join([str(overlay), str(broken_file)]))
    with caplog.at_level(logging.WARNING):
        entries = zoo_entries()
    assert "primus-hapt-stackrnn" in entries and "no-licence" not in entries
    assert f"{overlay}: zoo.no-licence.licence: Field required" in caplog.text
    layers = load_layers()
    assert any(p.startswith(f"{overlay}: recipes.not-a-mapping") for p in layers.problems)
    assert any(p.startswith(f"{broken_file}: line") for p in layers.problems)
    # the others keep working; the bad one is an error only when used
    assert "primus-hapt" in {r["name"] for r in json.loads(cli("recipes", "list", "--json").out)}
    with pytest.raises(ZooError, match=r"zoo.no-licence.licence: Field required"):
        get_entry("no-licence")
    with pytest.raises(RecipeError, match="recipes.not-a-mapping: must be a mapping"):
        primus_core.load_recipe("not-a-mapping")


def test_zoo_push_prints_an_entry_that_validates():
    files = {"model.safetensors": "a" * 64, "config.json": "b" * 64, "README.md": "c" * 64}
    result = PushResult("org/model", "main", "0" * 40, files, True)
    text = registry_snippet("my-model", result, SHIPPED, licence="cc-by-4.0")
    body = yaml.safe_load(text)["zoo"]["my-model"]
    entry = ZooEntry.model_validate(body)
    assert entry.licence == "cc-by-4.0" and entry.source.hub == "org/model"
    assert entry.training_data == ["hapt"]
    assert ZooEntry.model_validate(
        yaml.safe_load(registry_snippet("m", result))["zoo"]["m"]
    ).licence


def test_list_json_gives_the_file_of_each_entry(home, tmp_path, monkeypatch, cli, plugin):
    user = write(home / "registry.yaml", {"recipes": {"mine": {"extends": "primus-hapt"}}})
    overlay = write(tmp_path / "o.yaml", {"zoo": {"overlay-model": shipped_entry("models/m")}})
    monkeypatch.setenv("PRIMUS_REGISTRY", str(overlay))
    recipes = {r["name"]: r for r in json.loads(cli("recipes", "list", "--json").out)}
    assert recipes["mine"]["source"] == str(user)
    assert recipes["primus"]["source"] == str(REPO / "registry.yaml")
    assert recipes["plugin-recipe"]["source"] == "layers-test"  # a plugin's: its name
    zoo = {r["name"]: r for r in json.loads(cli("zoo", "list", "--json").out)}
    assert zoo["overlay-model"]["file"] == str(overlay)
    assert zoo["overlay-model"]["layer"] == "PRIMUS_REGISTRY"
    assert zoo["primus-hapt-stackrnn"]["file"] == str(REPO / "registry.yaml")
    assert zoo["plugin-model"]["file"] == "layers-test"


def test_plugin_entries_override_user_and_primus_registry_entries(
    home, tmp_path, monkeypatch, plugin
):
    """The plugin layer comes last: its `plugin-recipe` and `plugin-model` win over the same
    names in $PRIMUS_HOME/registry.yaml and in a PRIMUS_REGISTRY file."""
    user_model = {**shipped_entry("models/m"), "description": "user model"}
    write(
        home / "registry.yaml",
        {
            "recipes": {"plugin-recipe": {"extends": "simclr-hapt", "description": "user"}},
            "zoo": {"plugin-model": user_model},
        },
    )
    overlay = write(
        tmp_path / "o.yaml",
        {"recipes": {"plugin-recipe": {"extends": "simclr-hapt", "description": "overlay"}}},
    )
    monkeypatch.setenv("PRIMUS_REGISTRY", str(overlay))
    layers = load_layers()
    assert layers.recipes["plugin-recipe"].layer == "plugin layers-test"
    assert primus_core.load_recipe("plugin-recipe").description == "from a plugin"
    entry = get_entry("plugin-model")
    assert entry._layer == "plugin layers-test" and entry.description != "user model"
    assert entry._base_dir == REPO / "zoo"
    # without the plugin, the PRIMUS_REGISTRY entry wins over the user's
    reset()
    assert primus_core.load_recipe("plugin-recipe").description == "overlay"
    assert get_entry("plugin-model").description == "user model"


@pytest.fixture
def bad_zoo_plugin():
    """A plugin whose register_zoo gives one good entry and three bad ones."""

    def register_zoo(register):
        no_licence = shipped_entry("primus-hapt-stackrnn")
        del no_licence["licence"]
        register("no-licence", no_licence)
        register("not-a-mapping", [1, 2])
        register("../escape", shipped_entry("primus-hapt-stackrnn"))
        register("good-model", shipped_entry("primus-hapt-stackrnn"))

    with plugin_in_process("badzoo", REPO / "zoo" / "x.py", register_zoo=register_zoo):
        yield


def test_a_bad_register_zoo_entry_from_a_plugin_is_reported_and_skipped(
    home, bad_zoo_plugin, caplog, cli
):
    with caplog.at_level(logging.WARNING):
        entries = zoo_entries()
    assert "good-model" in entries and "primus-hapt-stackrnn" in entries
    assert not {"no-licence", "not-a-mapping", "../escape"} & set(entries)
    assert "badzoo: zoo.no-licence.licence: Field required" in caplog.text
    assert "badzoo: zoo.not-a-mapping: must be a mapping" in caplog.text
    assert "badzoo: zoo name '../escape' is not a safe name" in caplog.text
    listed = {r["name"] for r in json.loads(cli("zoo", "list", "--json").out)}
    assert "good-model" in listed and "no-licence" not in listed
    assert (pull("good-model") / "config.json").is_file()
    result = cli("zoo", "info", "no-licence", expect=1)
    assert result.err.strip().splitlines()[-1] == (
        "error: badzoo: zoo.no-licence.licence: Field required"
    )
