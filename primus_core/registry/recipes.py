"""registry.yaml: named recipes (with ``extends:``), ``a.b=value`` overrides, validation."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..components import (
    KINDS,
    dataset_info,
    format_validation_error,
    get_component,
    has_component,
)
from ..config import PRIMUS_CHANNELS, ComponentRef, Recipe
from ..errors import ComponentError, RecipeError
from .layers import Layers, load_layers, read_yaml

log = logging.getLogger("primus.registry")


def _read_yaml(path: Path) -> Any:
    return read_yaml(path)


def report_problems(layers: Layers) -> None:
    """One warning per skipped file or entry (the other entries stay usable)."""
    for problem in layers.problems:
        log.warning("skipped: %s", problem)


def load_registry(path: Path | None = None) -> dict[str, Any]:
    """``{"recipes": {name: body}, "zoo": {name: body}}``: one file when ``path`` is given,
    else every layer merged."""
    if path is not None:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: expected a mapping with 'recipes' and 'zoo'")
        if not isinstance(data.get("recipes") or {}, dict):
            raise RecipeError(f"{path}: 'recipes' must be a mapping of name -> recipe")
        return data
    layers = load_layers()
    return {
        "recipes": {name: e.body for name, e in layers.recipes.items()},
        "zoo": {name: e.body for name, e in layers.zoo.items()},
    }


def recipe_names() -> list[str]:
    return sorted(load_registry().get("recipes") or {})


def _deep_merge(base: dict, top: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _unknown_recipe(name: str, known: list[str]) -> RecipeError:
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
    return RecipeError(f"unknown recipe '{name}'{suggestion} Recipes: {', '.join(known)}")


def _resolve(name: str, recipes: dict[str, Any], chain: tuple[str, ...] = ()) -> dict:
    if name in chain:
        raise RecipeError(f"recipe '{name}' extends itself: {' -> '.join((*chain, name))}")
    if name not in recipes:
        raise _unknown_recipe(name, sorted(recipes))
    body = recipes[name]
    if not isinstance(body, dict):
        raise RecipeError(f"recipe '{name}' must be a mapping")
    return _extend(body, recipes, (*chain, name))


def _extend(body: dict, recipes: dict[str, Any], chain: tuple[str, ...]) -> dict:
    body = dict(body)
    parent = body.pop("extends", None)
    if parent is None:
        return copy.deepcopy(body)
    return _deep_merge(_resolve(str(parent), recipes, chain), body)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], value parsed as YAML)."""
    if "=" not in text:
        raise RecipeError(f"bad override '{text}': expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".")]
    if not key.strip() or any(not part for part in path):
        raise RecipeError(f"bad override '{text}': empty key in '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise RecipeError(f"bad override '{text}': value is not valid YAML") from None
    return path, value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, path[: depth + 1])
            continue
        if not isinstance(node, dict):
            raise RecipeError(
                f"cannot set '{'.'.join(path)}': '{'.'.join(path[:depth])}' is not a mapping"
            )
        node = node.setdefault(part, {})
    last = path[-1]
    if isinstance(node, list):
        index = _list_index(node, last, path)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(
            f"cannot set '{'.'.join(path)}': '{'.'.join(path[:-1])}' is not a mapping"
        )


def _list_index(items: list, part: str, path: list[str]) -> int:
    """A list element is addressed by position (``losses.0``) or by its type (``losses.mm``)."""
    if part.lstrip("-").isdigit():
        index = int(part)
        if -len(items) <= index < len(items):
            return index
        raise RecipeError(f"cannot set '{'.'.join(path)}': index {index} out of range")
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == part:
            return index
    types = [item.get("type") for item in items if isinstance(item, dict)]
    raise RecipeError(f"cannot set '{'.'.join(path)}': no entry of type '{part}' (has: {types})")


def _list_item(items: list, part: str, path: list[str]) -> Any:
    return items[_list_index(items, part, path)]


@dataclass
class LoadedRecipe:
    recipe: Recipe
    data: dict[str, Any]  # the resolved mapping, after extends and overrides

    @property
    def hash(self) -> str:
        return data_hash(self.data)


def data_hash(data: dict[str, Any]) -> str:
    """Short sha256 of a recipe mapping in canonical JSON."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _looks_like_path(name_or_path: str | os.PathLike) -> bool:
    text = str(name_or_path)
    return text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file()


def resolve_recipe(name_or_path: str | os.PathLike, overrides=()) -> LoadedRecipe:
    layers = load_layers()
    recipes = {name: e.body for name, e in layers.recipes.items()}
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        body = _read_yaml(path)
        if not isinstance(body, dict):
            raise RecipeError(f"{path}: a recipe file must be a mapping")
        data = _extend(body, recipes, (path.stem,))
        data.setdefault("name", path.stem)
    else:
        problem = layers.broken.get(("recipes", str(name_or_path)))
        if problem is not None:
            raise RecipeError(problem)
        data = _resolve(str(name_or_path), recipes)
        data.setdefault("name", str(name_or_path))
    for text in overrides:
        path_parts, value = parse_override(text)
        apply_override(data, path_parts, value)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"recipe '{data['name']}': {format_validation_error('', exc)}") from None
    return LoadedRecipe(recipe, data)


def load_recipe(name_or_path: str | os.PathLike, overrides=()) -> Recipe:
    """A validated Recipe by registry name or YAML file path, with ``a.b=value`` overrides."""
    return resolve_recipe(name_or_path, overrides).recipe


def component_refs(recipe: Recipe) -> list[tuple[str, str, ComponentRef]]:
    """(dotted path, kind, ref) of every component a recipe names."""
    refs = [("encoder", "encoder", recipe.encoder)]
    refs += [(f"teachers.{i}", "teacher", r) for i, r in enumerate(recipe.teachers)]
    refs += [(f"losses.{i}", "loss", r) for i, r in enumerate(recipe.losses)]
    refs += [(f"augmentations.{i}", "augmentation", r) for i, r in enumerate(recipe.augmentations)]
    refs += [(f"data.pretrain.{i}", "dataset", r) for i, r in enumerate(recipe.data.pretrain)]
    refs += [
        (f"data.validation.{i}", "dataset", r) for i, r in enumerate(recipe.data.validation or [])
    ]
    return refs


def check_recipe(recipe: Recipe) -> list[str]:
    """Problems that stop a recipe from being built: missing components, bad parameters, and
    an encoder that does not meet the contract with its losses, teachers and datasets."""
    problems = []
    for path, kind, ref in component_refs(recipe):
        if not has_component(kind, ref.type):
            problems.append(
                f"{path}: missing {kind} '{ref.type}' (no installed plugin registers it; "
                f"see `primus components list --kind {kind}`)"
            )
            continue
        try:
            get_component(kind, ref.type).config.model_validate(ref.params)
        except ValidationError as exc:
            problems.append(format_validation_error(path, exc))
    if not problems:  # the contract is checked on components that exist and validate
        problems += check_contract(recipe)
    return problems


def build_component(kind: str, ref: ComponentRef, path: str, **extra: Any) -> Any:
    """Create the component a recipe names; errors carry the recipe's dotted path."""
    assert kind in KINDS
    comp = get_component(kind, ref.type)
    try:
        config = comp.config.model_validate({**ref.params, **extra})
    except ValidationError as exc:
        raise ComponentError(format_validation_error(path, exc)) from None
    return comp.factory(config)


# ---------------------------------------------------------------- the encoder contract
DECLARED = ("channels", "rate_hz", "window_samples")


def encoder_heads(config: BaseModel, gets_mmcl: bool) -> set[str]:
    """The heads an encoder config declares: ``emb`` always, and each ``<head>_dim`` field > 0
    (``mmcl`` too when the trainer will set ``mmcl_dim`` from the teachers)."""
    heads = {"emb"}
    for name, value in config:
        if name.endswith("_dim") and isinstance(value, int) and value > 0:
            heads.add(name[: -len("_dim")])
    if gets_mmcl:
        heads.add("mmcl")
    return heads


def check_contract(recipe: Recipe) -> list[str]:
    """The recipe's encoder against its losses, teachers and datasets, before anything is built
    (CONTRIBUTING.md, "The encoder contract")."""
    etype = recipe.encoder.type
    config = get_component("encoder", etype).config.model_validate(recipe.encoder.params)
    fields = type(config).model_fields
    problems = [
        f"encoder: '{etype}' must declare '{name}' in its config (the encoder contract)"
        for name in DECLARED
        if name not in fields
    ]
    injected = bool(recipe.teachers) and "mmcl_dim" not in recipe.encoder.params
    if injected and "mmcl_dim" not in fields:
        problems.append(
            f"encoder: '{etype}' has no 'mmcl_dim' parameter, which the trainer sets to the "
            "teachers' output size; declare `mmcl_dim: int` (0: no head) in its config"
        )
    heads = encoder_heads(config, injected and "mmcl_dim" in fields)
    for i, ref in enumerate(recipe.losses):
        loss = get_component("loss", ref.type).config.model_validate(ref.params)
        needed = getattr(loss, "required_heads", None)
        missing = sorted(set(needed()) - heads) if callable(needed) else []
        if missing:
            problems.append(
                f"losses.{i}: loss '{ref.type}' needs the encoder head(s) {', '.join(missing)}; "
                f"encoder '{etype}' has {', '.join(sorted(heads))} (set "
                f"{', '.join(f'{h}_dim' for h in missing)} > 0)"
            )
    channels = getattr(config, "channels", None)
    if isinstance(channels, list):
        for path, kind, ref in component_refs(recipe):
            if kind != "dataset":
                continue
            known = set(
                getattr(dataset_info(get_component("dataset", ref.type)), "channels", [])
            ) | set(PRIMUS_CHANNELS)
            unknown = [c for c in channels if c not in known]
            if unknown:
                problems.append(
                    f"{path}: dataset '{ref.type}' has no channel {', '.join(unknown)} of encoder "
                    f"'{etype}' (channel names use the contract vocabulary: "
                    f"{', '.join(PRIMUS_CHANNELS)})"
                )
    return problems
