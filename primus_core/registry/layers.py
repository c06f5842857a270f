"""The layered registry: recipes and zoo entries from, in order,

1. the built-in registry.yaml (``built-in``),
2. ``$PRIMUS_HOME/registry.yaml`` when it exists (``user``),
3. each file of ``PRIMUS_REGISTRY`` (a path list, ``os.pathsep``-separated),
4. plugins, through the ``register_recipes`` and ``register_zoo`` hooks (``plugin NAME``).

A later layer adds entries and may override one by name. A broken file or entry is reported with
its file and dotted path and skipped; it is an error only when that entry is used.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError
from ..paths import primus_home

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN = REPO_ROOT / "registry.yaml"
SECTIONS = ("recipes", "zoo")


@dataclass(frozen=True)
class Entry:
    """One recipe or zoo entry and where it came from. ``base_dir`` is the folder relative
    ``shipped:`` paths (and recipe files) resolve against: the declaring file's folder."""

    section: str
    name: str
    body: Any
    layer: str
    source: str
    base_dir: Path


@dataclass
class Layers:
    recipes: dict[str, Entry] = field(default_factory=dict)
    zoo: dict[str, Entry] = field(default_factory=dict)
    # "FILE: DOTTED.PATH: message" for every entry or file that was skipped
    problems: list[str] = field(default_factory=list)
    # name -> the problem that made it unusable (raised when the entry is used)
    broken: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        getattr(self, entry.section)[entry.name] = entry
        self.broken.pop((entry.section, entry.name), None)

    def skip(self, section: str, name: str, problem: str) -> None:
        self.problems.append(problem)
        if name:
            self.broken[(section, name)] = problem


# libyaml's parser when PyYAML was built with it (about 10x faster), else the pure-Python one
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# (path, size, mtime) -> parsed document: a command resolves several recipes, each reading the
# same layers; callers get a copy, so that changing an entry never changes the cache
_PARSED: dict[tuple[str, int, int], Any] = {}


def read_yaml(path: Path) -> Any:
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _PARSED:
            return copy.deepcopy(_PARSED[key])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such file") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        _PARSED[key] = yaml.load(text, Loader=SAFE_LOADER)
        return copy.deepcopy(_PARSED[key])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None


def layer_files() -> list[tuple[str, Path]]:
    """(layer, file) of every registry file, in order."""
    files = [("built-in", BUILTIN)]
    user = primus_home() / "registry.yaml"
    if user.is_file():
        files.append(("user", user))
    for part in (os.environ.get("PRIMUS_REGISTRY") or "").split(os.pathsep):
        if part.strip():
            files.append(("PRIMUS_REGISTRY", Path(part.strip()).expanduser()))
    return files


def _add_file(layers: Layers, layer: str, path: Path) -> None:
    try:
        data = read_yaml(path) or {}
    except RecipeError as exc:
        layers.skip("", "", str(exc))
        return
    if not isinstance(data, dict):
        layers.skip("", "", f"{path}: expected a mapping with 'recipes' and 'zoo'")
        return
    for section in SECTIONS:
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            layers.skip("", "", f"{path}: {section}: must be a mapping of name -> entry")
            continue
        for name, body in entries.items():
            _add_entry(layers, section, name, body, layer, str(path), path.resolve().parent)


def _add_entry(
    layers: Layers, section: str, name: Any, body: Any, layer: str, source: str, base: Path
) -> None:
    if not isinstance(name, str) or not name:
        layers.skip(section, "", f"{source}: {section}.{name!r}: the name must be a string")
        return
    if not isinstance(body, dict):
        layers.skip(section, name, f"{source}: {section}.{name}: must be a mapping")
        return
    layers.add(Entry(section, name, body, layer, source, base))


def _add_plugins(layers: Layers) -> None:
    from ..plugins import get_host

    host = get_host()
    for section, hook in (("recipes", "register_recipes"), ("zoo", "register_zoo")):
        for impl in reversed(getattr(host.pm.hook, hook).get_hookimpls()):
            plugin = impl.plugin_name
            module = getattr(impl.plugin, "__file__", None)
            default_base = Path(module).resolve().parent if module else Path.cwd()

            def register(
                name: str,
                body: dict,
                base_dir: str | os.PathLike | None = None,
                _section=section,
                _plugin=plugin,
                _base=default_base,
            ) -> None:
                base = Path(base_dir).resolve() if base_dir is not None else _base
                _add_entry(layers, _section, name, body, f"plugin {_plugin}", _plugin, base)

            host.call_impl(impl, register=register)


def load_layers() -> Layers:
    """Every layer, merged: later layers add and override by name."""
    layers = Layers()
    for layer, path in layer_files():
        _add_file(layers, layer, path)
    _add_plugins(layers)
    return layers
