"""Component kinds, the component registry filled by plugins, and ``create()`` /
``list_components()``."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ComponentError
from .plugins import PluginInfo, get_host, reset_host

# kind -> hook that registers it
KINDS: dict[str, str] = {
    "encoder": "register_encoders",
    "teacher": "register_teachers",
    "loss": "register_losses",
    "augmentation": "register_augmentations",
    "dataset": "register_datasets",
}


# a factory named instead of imported: "package.module:attribute"
FACTORY_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class NoParams(BaseModel):
    """Config of a component that takes no parameters."""

    model_config = ConfigDict(defer_build=True, extra="forbid")


@dataclass(frozen=True)
class Component:
    """A registered component. ``factory_ref`` is the callable itself or, so that listing and
    checking never import heavy libraries, its ``"module:attr"`` name, imported on first use."""

    kind: str
    name: str
    factory_ref: Callable[[BaseModel], Any] | str
    config: type[BaseModel]
    plugin: str

    @cached_property
    def factory(self) -> Callable[[BaseModel], Any]:
        if not isinstance(self.factory_ref, str):
            return self.factory_ref
        module_name, _, attr = self.factory_ref.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ComponentError(
                f"{self.kind} '{self.name}' (plugin '{self.plugin}'): cannot import its factory "
                f"'{self.factory_ref}': {type(exc).__name__}: {exc}"
            ) from None

    @property
    def description(self) -> str:
        own_doc = self.config.__dict__.get("__doc__") if self.config is not NoParams else None
        factory_doc = None if isinstance(self.factory_ref, str) else self.factory_ref.__doc__
        doc = (own_doc or factory_doc or "").strip()
        return doc.splitlines()[0] if doc else ""

    def params(self) -> list[dict[str, Any]]:
        rows = []
        for field_name, field in self.config.model_fields.items():
            required = field.is_required()
            rows.append(
                {
                    "name": field_name,
                    "type": _type_name(field.annotation),
                    "default": None
                    if required
                    else _jsonable(field.get_default(call_default_factory=True)),
                    "required": required,
                    "description": field.description or "",
                }
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "description": self.description,
            "params": self.params(),
        }


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


_REGISTRY: dict[str, dict[str, Component]] | None = None


def reset() -> None:
    """Forget every loaded plugin and component (used by tests after changing the environment)."""
    global _REGISTRY
    _REGISTRY = None
    reset_host()


def _collect() -> dict[str, dict[str, Component]]:
    host = get_host()
    registry: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
    for kind, hook_name in KINDS.items():
        caller = getattr(host.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            plugin_name = impl.plugin_name
            table = registry[kind]

            def register(
                name: str,
                factory: Callable | str,
                config: type[BaseModel] | None = None,
                _kind=kind,
                _plugin=plugin_name,
                _table=table,
            ) -> None:
                _add(_table, Component(_kind, name, factory, config or NoParams, _plugin))

            host.call_impl(impl, register=register)
    return registry


def _add(table: dict[str, Component], comp: Component) -> None:
    if not isinstance(comp.name, str) or not comp.name:
        raise ComponentError(f"plugin '{comp.plugin}' registered a {comp.kind} with an empty name")
    ref = comp.factory_ref
    if not (FACTORY_NAME.fullmatch(ref) if isinstance(ref, str) else callable(ref)):
        raise ComponentError(
            f"plugin '{comp.plugin}' registered {comp.kind} '{comp.name}' with factory {ref!r}: "
            "expected a callable or a 'package.module:attribute' name"
        )
    if not (isinstance(comp.config, type) and issubclass(comp.config, BaseModel)):
        raise ComponentError(
            f"plugin '{comp.plugin}' registered {comp.kind} '{comp.name}' with config "
            f"{comp.config!r}: expected a pydantic BaseModel subclass"
        )
    if comp.name in table:
        other = table[comp.name]
        raise ComponentError(
            f"duplicate {comp.kind} '{comp.name}': registered by plugin '{other.plugin}' "
            f"and by plugin '{comp.plugin}'"
        )
    table[comp.name] = comp


def registry() -> dict[str, dict[str, Component]]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _collect()
    return _REGISTRY


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ComponentError(f"unknown component kind '{kind}'; kinds are: {', '.join(KINDS)}")
    return kind


def get_component(kind: str, name: str) -> Component:
    table = registry()[check_kind(kind)]
    if name in table:
        return table[name]
    known = sorted(table)
    hint = difflib.get_close_matches(name, known, n=1)
    message = f"unknown {kind} '{name}'"
    if hint:
        message += f"; did you mean '{hint[0]}'?"
    message += f" Registered {kind}s: {', '.join(known) if known else '(none)'}"
    raise ComponentError(message)


def dataset_info(component: Component):
    """What a registered dataset reads (a ``DatasetInfo``): its config's ``INFO`` class attribute
    when declared (the adapter module is then not imported), else its adapter's ``info``."""
    info = getattr(component.config, "INFO", None)
    return info if info is not None else getattr(component.factory, "info", None)


def has_component(kind: str, name: str) -> bool:
    return name in registry()[check_kind(kind)]


def list_components(kind: str | None = None) -> list[Component]:
    """Every registered component (of one kind when given), sorted by kind then name."""
    kinds = [check_kind(kind)] if kind else list(KINDS)
    return [registry()[k][n] for k in kinds for n in sorted(registry()[k])]


def format_validation_error(prefix: str, error: ValidationError) -> str:
    """One line per problem: ``prefix.dotted.path: message (got VALUE)``."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        got = item.get("input")
        text = repr(got)
        text = text if len(text) <= 80 else text[:77] + "..."
        shown = "" if item["type"] == "missing" else f" (got {text})"
        parts.append(f"{path}: {item['msg']}{shown}")
    return "; ".join(parts)


def validate_params(
    kind: str, name: str, params: dict[str, Any], path: str | None = None
) -> BaseModel:
    comp = get_component(kind, name)
    try:
        return comp.config.model_validate(params)
    except ValidationError as exc:
        raise ComponentError(format_validation_error(path or f"{kind}:{name}", exc)) from None


def create(kind: str, name: str, **params: Any) -> Any:
    """Build the component ``name`` of ``kind`` from keyword parameters, validated by its config."""
    comp = get_component(kind, name)
    config = validate_params(kind, name, params)
    return comp.factory(config)


def list_plugins() -> list[PluginInfo]:
    """Every plugin with its status, after its component hooks have run (one that raised there
    is listed as broken, not ok)."""
    from .errors import PluginError

    host = get_host()
    try:
        registry()
    except PluginError:  # strict mode: the plugin at fault is already marked broken
        pass  # primus's own errors (a duplicate name) are not swallowed
    return sorted(host.plugins.values(), key=lambda p: p.name)


def provenance(kind: str, name: str) -> dict[str, str | None]:
    """Which plugin, distribution and version provide a component (recorded in model
    directories, so that loading without the plugin can say what to install)."""
    comp = get_component(kind, name)
    info = get_host().plugins.get(comp.plugin)
    return {
        "kind": kind,
        "name": name,
        "plugin": comp.plugin,
        "distribution": info.distribution if info else None,
        "version": info.version if info else None,
    }
