"""The encoder contract, checked by `recipes show`, the `ready` column and `primus train` before
anything is built."""

from __future__ import annotations

import types

import pytest
from pydantic import BaseModel, ConfigDict

import primus_core
from primus_core.components import reset
from primus_core.errors import PrimusError
from primus_core.plugins import PluginInfo, get_host
from primus_core.registry.recipes import check_recipe


class BareConfig(BaseModel):
    """An encoder config that declares nothing of the contract."""

    model_config = ConfigDict(extra="forbid")
    hidden_size: int = 8


@pytest.fixture
def bare_encoder():
    module = types.ModuleType("contract_test_plugin")

    @primus_core.hookimpl
    def register_encoders(register):
        register("bare", "contract_test_plugin:Nothing", config=BareConfig)

    module.register_encoders = register_encoders
    reset()
    get_host().register(module, PluginInfo("contracttest", module.__name__))
    yield
    reset()


def write(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_the_built_in_recipes_meet_the_contract():
    for name in ("primus-hapt", "simclr-hapt", "imu2clip-hapt", "supervised-hapt", "primus"):
        assert check_recipe(primus_core.load_recipe(name)) == [], name


def test_a_loss_needing_a_missing_head_is_rejected_before_training(tmp_path, cli):
    path = write(tmp_path, "extends: simclr-hapt\nencoder: {type: stacked-rnn, ssl_dim: 0}\n")
    problems = check_recipe(primus_core.load_recipe(path))
    assert problems == [
        "losses.0: loss 'ss' needs the encoder head(s) ssl; encoder 'stacked-rnn' has emb, mmcl "
        "(set ssl_dim > 0)"
    ]
    result = cli("recipes", "show", path, expect=1)
    assert "needs the encoder head(s) ssl" in result.err + result.out
    out = tmp_path / "run"
    with pytest.raises(PrimusError, match="needs the encoder head"):
        from primus_core.training.trainer import train

        train(str(path), out=out, device="cpu")
    assert not (out / "model").exists()


def test_channel_names_outside_the_vocabulary_are_rejected(tmp_path):
    names = "[ch0, ch1, ch2, ch3, ch4, ch5]"
    units = "[a, a, a, a, a, a]"
    path = write(
        tmp_path,
        f"extends: imu2clip-hapt\nencoder: {{type: stacked-rnn, channels: {names}, units: {units}}}\n",
    )
    (problem,) = check_recipe(primus_core.load_recipe(path))
    assert problem.startswith("data.pretrain.0: dataset 'hapt' has no channel ch0, ch1")


def test_an_encoder_without_the_declared_fields_or_mmcl_dim_is_named(tmp_path, bare_encoder):
    path = write(tmp_path, "extends: imu2clip-hapt\nencoder: {type: bare}\n")
    problems = check_recipe(primus_core.load_recipe(path))
    assert (
        "encoder: 'bare' must declare 'channels' in its config (the encoder contract)" in problems
    )
    assert any("has no 'mmcl_dim' parameter, which the trainer sets" in p for p in problems)
    assert any("loss 'mm' needs the encoder head(s) mmcl" in p for p in problems)
