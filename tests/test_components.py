import pytest

import primus_core
from primus_core.components import KINDS, list_components
from primus_core.errors import ComponentError


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
