"""Shared fixtures: an isolated PRIMUS_HOME, strict plugins, and an in-process CLI runner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def primus_home(tmp_path_factory) -> Path:
    # PRIMUS_TEST_HOME keeps one home (and its teacher-embedding cache) across test sessions:
    # scripts/mutation.sh runs a session per mutant
    kept = os.environ.get("PRIMUS_TEST_HOME")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("primus_home")


@pytest.fixture(autouse=True)
def _primus_env(primus_home, monkeypatch):
    monkeypatch.setenv("PRIMUS_HOME", str(primus_home))
    monkeypatch.setenv("PRIMUS_STRICT_PLUGINS", "1")
    monkeypatch.delenv("PRIMUS_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PRIMUS_DISABLE_PLUGINS", raising=False)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``primus ARGS`` in this process; assert the exit code (``expect``)."""
    from primus_core.cli.main import main

    def run(*args: str, expect: int = 0) -> CliResult:
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        assert code == expect, f"primus {' '.join(map(str, args))} exited {code}:\n{err}\n{out}"
        return CliResult(code, out, err)

    return run


def run_primus(
    *args: str, env: dict[str, str] | None = None, expect: int | None = 0, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter (for tests that change installed plugins)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "primus_core", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if expect is not None:
        assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stderr}\n{proc.stdout}"
    return proc


def pytest_collection_modifyitems(items):
    """The files holding `slow` tests (multi-process runs, a pip install, a Hub server) first,
    each file's tests kept together (so a module fixture is built once per worker). pytest-xdist
    hands the first tests out one at a time to alternating workers, so the long ones then run
    side by side at the start instead of leaving one worker with a long tail at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)


@contextlib.contextmanager
def plugin_in_process(
    name: str, file: Path | None = None, **hooks: Callable
) -> Iterator[types.ModuleType]:
    """A plugin called ``name`` whose hooks are ``hooks`` (hook name -> function), registered in
    this process as an entry point would register it, for the block; the component registry is
    rebuilt on entry and on exit. ``file`` is the module's ``__file__`` (its folder is the base of
    the plugin's relative paths)."""
    import primus_core
    from primus_core.components import reset
    from primus_core.plugins import PluginInfo, get_host

    module = types.ModuleType(f"{name.replace('-', '_')}_test_plugin")
    if file is not None:
        module.__file__ = str(file)
    for hook, function in hooks.items():
        setattr(module, hook, primus_core.hookimpl(function))
    reset()
    get_host().register(module, PluginInfo(name, module.__name__))
    try:
        yield module
    finally:
        reset()
