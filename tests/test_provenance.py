"""Model directories record which plugin distribution and version provided the encoder; loading
one without that plugin says what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import types
from pathlib import Path

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


PLUGIN = """
import primus_core

@primus_core.hookimpl
def register_encoders(register):
    from primus_stackrnn import StackedRNNConfig

    register("pip-rnn", "primus_stackrnn.encoder:StackedRNNEncoder", config=StackedRNNConfig)
"""
SAVE = f"""
import sys, primus_core
from primus_core.zoo.modeldir import save_model_dir
small = {SMALL!r}
encoder = primus_core.create("encoder", "pip-rnn", **small)
save_model_dir(encoder, sys.argv[1], encoder_type="pip-rnn", encoder_params=small)
"""
LOAD = (
    "import sys; from primus_core.zoo.modeldir import load_model_dir; load_model_dir(sys.argv[1])"
)


@pytest.mark.slow
def test_provenance_with_a_plugin_pip_installed_then_pip_uninstalled(tmp_path):
    """The whole round trip with pip itself: a plugin distribution installed into a virtual
    environment layered on this one, a model saved with its encoder, the distribution
    uninstalled, and the model loaded again."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # this environment's packages (primus and its editable finder included) under the new one
    (Path(purelib) / "parent_env.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    )
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "primus_pip_rnn.py").write_text(PLUGIN)
    (package / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "primus-pip-rnn"
        version = "2.0.1"
        [project.entry-points.primus]
        piprnn = "primus_pip_rnn"
        [tool.setuptools]
        py-modules = ["primus_pip_rnn"]
        """)
    )
    pip = [sys.executable, "-m", "pip", "--python", str(python), "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", package], check=True)

    def run(script: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PRIMUS_STRICT_PLUGINS": "1"}
        return subprocess.run(
            [python, "-c", script, tmp_path / "m"], capture_output=True, text=True, env=env
        )

    saved = run(SAVE)
    assert saved.returncode == 0, saved.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["encoder"]["provenance"] == {
        "kind": "encoder",
        "name": "pip-rnn",
        "plugin": "piprnn",
        "distribution": "primus-pip-rnn",
        "version": "2.0.1",
    }
    assert run(LOAD).returncode == 0

    subprocess.run([*pip, "uninstall", "-y", "primus-pip-rnn"], check=True)
    assert not (Path(purelib) / "primus_pip_rnn.py").exists()
    loaded = run(LOAD)
    assert loaded.returncode != 0
    assert "pip install 'primus-pip-rnn==2.0.1'" in loaded.stderr


def test_a_trained_model_lists_the_provenance_of_every_component_of_its_recipe(tmp_path):
    """A few training steps of primus-hapt (tiny sizes): config.json's top-level `provenance`
    has one entry per component the recipe names, in recipe order, each with its plugin and
    the distribution and version that provide it."""
    from importlib.metadata import version

    from primus_core.training.trainer import train

    tiny = [
        "encoder.hidden_size=16",
        "encoder.conv_channels=8",
        "train.batch_size=8",
        "losses.nn.queue_size=16",
        "data.max_windows=64",
    ]
    result = train(
        "primus-hapt", tiny, out=tmp_path / "run", max_steps=2, device="cpu", progress=False
    )
    assert result.steps == 2 and result.model_dir is not None
    config = json.loads((result.model_dir / "config.json").read_text())
    here = {"distribution": "primus-zoo", "version": version("primus-zoo")}
    expected = [
        {"kind": "encoder", "name": "stacked-rnn", "plugin": "stackrnn", **here},
        {"kind": "teacher", "name": "minilm-text", "plugin": "teachers", **here},
        {"kind": "loss", "name": "ss", "plugin": "objectives", **here},
        {"kind": "loss", "name": "mm", "plugin": "objectives", **here},
        {"kind": "loss", "name": "nn", "plugin": "objectives", **here},
        {"kind": "augmentation", "name": "scale-per-timestep", "plugin": "objectives", **here},
        {"kind": "augmentation", "name": "permute", "plugin": "objectives", **here},
        {"kind": "dataset", "name": "hapt", "plugin": "datasets", **here},
    ]
    assert config["provenance"] == expected
    assert config["encoder"]["provenance"] == expected[0]
