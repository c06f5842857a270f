"""The commands that only read (help, version, plugins, components, recipes, zoo entries, data)
answer without importing torch, numpy or any model library: plugins register their components lazily
("module:attr" factories, torch-free configs; dataset configs carry their ``INFO``). Timing is measured by
benchmarks/light_commands.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import primus_core
from primus_core.components import Component, NoParams, get_component
from primus_core.errors import ComponentError

LIGHT = [
    ["--help"],
    ["--version"],
    ["plugins", "list"],
    ["components", "list"],
    ["components", "list", "--json"],
    ["recipes", "list"],
    ["recipes", "show", "primus-hapt"],
    ["zoo", "list"],
    ["zoo", "info", "primus-hapt-stackrnn"],
    ["data", "list"],
]
# numpy too: dataset adapters and the data pipeline import it, the listings must not need them
HEAVY = ["torch", "torchvision", "transformers", "timm", "huggingface_hub", "safetensors", "numpy"]

SCRIPT = """
import json, sys
from primus_core.cli import main
heavy, report = json.loads(sys.argv[1]), {}
for args in json.loads(sys.argv[2]):
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
    report[" ".join(args)] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(report), file=sys.stderr)
"""


def test_light_commands_import_no_model_library(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(HEAVY), json.dumps(LIGHT)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {" ".join(args): [] for args in LIGHT}


def test_a_named_factory_is_imported_on_first_use():
    comp = get_component("encoder", "stacked-rnn")
    assert comp.factory_ref == "primus_stackrnn.encoder:StackedRNNEncoder"
    assert comp.factory.__name__ == "StackedRNNEncoder"
    encoder = primus_core.create("encoder", "stacked-rnn", hidden_size=8, ssl_dim=0, mmcl_dim=0)
    assert type(encoder).__name__ == "StackedRNNEncoder"


def test_a_named_factory_that_does_not_import_is_one_clear_error():
    comp = Component("encoder", "ghost", "no_such_module_xyz:Thing", NoParams, "someplugin")
    with pytest.raises(
        ComponentError, match="cannot import its factory 'no_such_module_xyz:Thing'"
    ):
        comp.factory  # noqa: B018 - the property imports
