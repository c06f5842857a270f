"""Plugins are found through the "primus" entry-point group of really installed distributions:
the example third-party plugin (examples/primus-example-plugin) and a few broken ones are
installed with pip into a target folder that the child processes put on their path."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, run_primus
from primus_core.components import list_plugins

BAD_PLUGINS = {
    "broken": "raise ImportError('this plugin is broken on purpose')\n",
    "typo": textwrap.dedent("""
        import primus_core

        @primus_core.hookimpl
        def register_encoderz(register):
            pass
    """),
    "dup": textwrap.dedent("""
        import primus_core
        from primus_stackrnn import StackedRNNConfig, StackedRNNEncoder

        @primus_core.hookimpl
        def register_encoders(register):
            register("stacked-rnn", StackedRNNEncoder, config=StackedRNNConfig)
    """),
    # issue 13, item 4: what used to escape the isolation
    "exits": "import sys\nsys.exit(0)\n",
    "badcmd": textwrap.dedent("""
        import primus_core

        @primus_core.hookimpl
        def register_commands(cli):
            raise RuntimeError('no commands today')
    """),
    "badcomp": textwrap.dedent("""
        import primus_core

        @primus_core.hookimpl
        def register_encoders(register):
            raise SystemExit('component hook gave up')
    """),
}
ISSUE_13 = "exits,badcmd,badcomp"
# plugins that end every command: disabled by env_for unless a test names them in `enable`
OPT_IN = {
    "lightdup": textwrap.dedent("""
        import primus_core

        @primus_core.hookimpl
        def register_encoders(register):
            register("stacked-rnn", "primus_lightdup_plugin:Nothing")
    """),
    "ctrlc": "raise KeyboardInterrupt\n",
    "ctrlchook": textwrap.dedent("""
        import primus_core

        @primus_core.hookimpl
        def register_encoders(register):
            raise KeyboardInterrupt
    """),
}


def write_plugin_package(root, name, source):
    root.mkdir()
    (root / f"primus_{name}_plugin.py").write_text(source)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "primus-{name}-plugin"
        version = "0.0.1"
        [project.entry-points.primus]
        {name} = "primus_{name}_plugin"
        [tool.setuptools]
        py-modules = ["primus_{name}_plugin"]
    """)
    )
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with the example plugin and the bad plugins pip-installed into it."""
    work = tmp_path_factory.mktemp("plugins")
    target = work / "site"
    sources = [REPO / "examples" / "primus-example-plugin"]
    sources += [
        write_plugin_package(work / name, name, src)
        for name, src in {**BAD_PLUGINS, **OPT_IN}.items()
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


def env_for(site, disable=f"broken,typo,dup,{ISSUE_13}", strict="1", enable=(), **extra):
    blocked = [name for name in disable.split(",") if name]
    blocked += [name for name in OPT_IN if name not in enable]
    env = {
        "PYTHONPATH": str(site),
        "PRIMUS_STRICT_PLUGINS": strict,
        "PRIMUS_DISABLE_PLUGINS": ",".join(blocked),
    }
    env.update(extra)
    return env


def test_builtin_plugins_come_from_entry_points():
    plugins = {p.name: p for p in list_plugins()}
    for name in ("stackrnn", "objectives", "teachers", "datasets"):
        assert plugins[name].status == "ok" and plugins[name].distribution == "primus-zoo"
    assert "register_encoders" in plugins["stackrnn"].hooks


def test_hook_register_encoders_third_party_component_used_from_a_recipe(site, tmp_path):
    env = env_for(site)
    rows = json.loads(
        run_primus("components", "list", "--kind", "encoder", "--json", env=env).stdout
    )
    stats = next(r for r in rows if r["name"] == "stats-mlp")
    assert stats["plugin"] == "example"
    assert {p["name"]: p["default"] for p in stats["params"]}["hidden_size"] == 64
    recipe = tmp_path / "stats.yaml"
    recipe.write_text("encoder: {type: stats-mlp, hidden_size: 32}\n")
    shown = json.loads(run_primus("recipes", "show", recipe, "--json", env=env).stdout)
    assert shown["problems"] == [] and shown["recipe"]["encoder"]["hidden_size"] == 32
    recipe.write_text("encoder: {type: stats-mlp, hidden_size: -1}\n")
    bad = run_primus("recipes", "show", recipe, env=env, expect=1)
    assert "encoder.hidden_size: Input should be greater than 0" in bad.stderr


def test_hook_register_commands_adds_a_cli_command(site):
    proc = run_primus("stats-mlp-info", env=env_for(site))
    assert int(proc.stdout) == 4 * 6 * 64 + 64 + 64 * 64 + 64 + 64 * 32 + 32


def test_broken_plugin_is_reported_and_the_rest_work(site):
    env = env_for(site, disable=f"typo,dup,{ISSUE_13}", strict="0")
    rows = {
        p["name"]: p for p in json.loads(run_primus("plugins", "list", "--json", env=env).stdout)
    }
    assert rows["broken"]["status"] == "broken"
    assert "ImportError: this plugin is broken on purpose" in rows["broken"]["error"]
    assert rows["example"]["status"] == "ok" and rows["stackrnn"]["status"] == "ok"
    proc = run_primus(
        "plugins", "list", env=env_for(site, disable=f"typo,dup,{ISSUE_13}"), expect=1
    )
    assert "error: plugin 'broken'" in proc.stderr and "Traceback" not in proc.stderr


def test_every_hook_is_isolated(site, tmp_path):
    """sys.exit() at import, a register_commands hook that raises and a component hook that
    raises SystemExit each mark only their plugin broken; every command keeps working."""
    env = env_for(site, disable="broken,typo,dup", strict="0")
    rows = {
        p["name"]: p for p in json.loads(run_primus("plugins", "list", "--json", env=env).stdout)
    }
    assert rows["exits"]["status"] == "broken" and "SystemExit" in rows["exits"]["error"]
    assert rows["badcmd"]["status"] == "broken" and "no commands today" in rows["badcmd"]["error"]
    assert rows["badcomp"]["status"] == "broken"
    assert "component hook gave up" in rows["badcomp"]["error"]
    assert rows["example"]["status"] == "ok" and rows["stackrnn"]["status"] == "ok"
    assert int(run_primus("stats-mlp-info", env=env).stdout) > 0  # the others' commands stay
    names = json.loads(run_primus("components", "list", "--json", env=env).stdout)
    assert {"stacked-rnn", "stats-mlp"} <= {r["name"] for r in names}
    # strict mode: one error line naming the plugin, never a silent exit 0 or a traceback
    for name in ISSUE_13.split(","):
        others = ",".join(n for n in ["broken", "typo", "dup", *ISSUE_13.split(",")] if n != name)
        proc = run_primus("components", "list", env=env_for(site, disable=others), expect=1)
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: plugin '{name}'")
        assert "Traceback" not in proc.stderr


def test_unknown_hook_implementation_is_rejected(site):
    env = env_for(site, disable=f"broken,dup,{ISSUE_13}", strict="0")
    rows = {
        p["name"]: p for p in json.loads(run_primus("plugins", "list", "--json", env=env).stdout)
    }
    assert rows["typo"]["status"] == "broken"
    assert "unknown hook implementation" in rows["typo"]["error"]
    assert "register_encoderz" in rows["typo"]["error"]


def test_duplicate_names_name_both_plugins(site):
    proc = run_primus(
        "components", "list", env=env_for(site, disable=f"broken,typo,{ISSUE_13}"), expect=1
    )
    assert "duplicate encoder 'stacked-rnn'" in proc.stderr
    assert "'dup'" in proc.stderr and "'stackrnn'" in proc.stderr


def test_allow_and_block_lists(site):
    env = env_for(site, disable="", PRIMUS_LOAD_PLUGINS="stackrnn,example")
    rows = {
        p["name"]: p["status"]
        for p in json.loads(run_primus("plugins", "list", "--json", env=env).stdout)
    }
    assert rows["stackrnn"] == "ok" and rows["example"] == "ok"
    assert rows["broken"] == rows["dup"] == rows["datasets"] == "disabled"
    env = env_for(site, disable=f"broken,typo,dup,example,{ISSUE_13}")
    names = {
        r["name"] for r in json.loads(run_primus("components", "list", "--json", env=env).stdout)
    }
    assert "stats-mlp" not in names and "stacked-rnn" in names


def test_plugin_isolation_lets_ctrl_c_through(site):
    """Ctrl-C at a plugin's import or in its hook stops the command (exit 130), even without
    strict mode, instead of marking the plugin broken and going on."""
    for name in ("ctrlc", "ctrlchook"):
        proc = run_primus(
            "plugins", "list", "--json", env=env_for(site, strict="0", enable=[name]), expect=130
        )
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert proc.stderr.split() in (["aborted"], ["interrupted"])


def test_primus_errors_from_a_hook_are_not_swallowed_without_strict_mode(site):
    """A duplicate component name raised inside a hook is one error line, exit 1, also with
    PRIMUS_STRICT_PLUGINS=0: the plugin is not merely listed as broken."""
    env = env_for(site, strict="0", enable=["lightdup"])
    for command in (["components", "list", "--json"], ["plugins", "list", "--json"]):
        proc = run_primus(*command, env=env, expect=1)
        assert proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: duplicate encoder 'stacked-rnn'")
        assert "'lightdup'" in line and "'stackrnn'" in line


@pytest.mark.slow
def test_the_example_plugins_documented_recipe_trains_and_its_model_embeds(site, tmp_path):
    """CONTRIBUTING.md, "Writing a plugin": my-recipe.yaml as written there trains with
    `primus train my-recipe.yaml --max-steps 20`, and the model folder it writes loads and
    embeds: `emb` of hidden_size 32, `mmcl` sized by the trainer to the MiniLM teacher's 384."""
    import numpy as np

    env = env_for(site)
    recipe = tmp_path / "my-recipe.yaml"
    recipe.write_text(
        "# my-recipe.yaml: MM alignment with the MiniLM text teacher (stats-mlp has emb and mmcl "
        "heads)\n"
        "extends: imu2clip-hapt\n"
        "encoder: {type: stats-mlp, hidden_size: 32}\n"
    )
    shown = json.loads(run_primus("recipes", "show", recipe, "--json", env=env).stdout)
    assert shown["problems"] == [] and shown["recipe"]["encoder"]["type"] == "stats-mlp"
    run = tmp_path / "run"
    args = ["--max-steps", "20", "--out", run, "--device", "cpu", "--no-progress"]
    run_primus("train", recipe, *args, "--set", "data.max_windows=256", env=env)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["encoder"]["type"] == "stats-mlp" and config["training"]["steps"] == 20
    assert config["encoder"]["provenance"]["distribution"] == "primus-example-plugin"
    windows = np.random.default_rng(0).normal(size=(3, 6, 250)).astype(np.float32)
    np.save(tmp_path / "w.npy", windows)
    assert config["output_sizes"] == {"emb": 32, "mmcl": 384}
    out = tmp_path / "mmcl.npy"
    run_primus("embed", run / "model", tmp_path / "w.npy", "--head", "mmcl", "--out", out, env=env)
    vectors = np.load(out)
    assert vectors.shape == (3, 384) and np.isfinite(vectors).all()


@pytest.mark.slow
def test_example_plugin_own_test_passes(site):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "examples" / "primus-example-plugin" / "tests"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env_for(site)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
