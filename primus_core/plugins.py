"""The plugin manager: built-in and third-party plugins, all found through the "primus"
entry-point group, with broken plugins isolated and reported.

Environment:
  PRIMUS_LOAD_PLUGINS     comma-separated allow-list of plugin (entry-point) names
  PRIMUS_DISABLE_PLUGINS  comma-separated block-list of plugin names
  PRIMUS_STRICT_PLUGINS   "1": a broken plugin is a hard error instead of a warning
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from .errors import PluginError
from .specs import PROJECT, PrimusSpecs

log = logging.getLogger("primus.plugins")
ENTRY_POINT_GROUP = "primus"


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "ok"  # ok | broken | disabled
    error: str | None = None
    hooks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "hooks": self.hooks,
        }


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def strict_plugins() -> bool:
    return os.environ.get("PRIMUS_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


class PluginHost:
    """Owns the pluggy manager and what is known about every plugin it tried to load."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(PrimusSpecs)
        self.plugins: dict[str, PluginInfo] = {}

    def report_broken(self, info: PluginInfo, error: BaseException | str) -> None:
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        info.status, info.error = "broken", message
        if strict_plugins():
            raise PluginError(f"plugin '{info.name}' ({info.module}) is broken: {message}")
        log.warning("plugin '%s' is broken and was skipped: %s", info.name, message)

    def load_entry_points(self) -> None:
        allow = _env_list("PRIMUS_LOAD_PLUGINS")
        block = _env_list("PRIMUS_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            )
            self.plugins[ep.name] = info
            if (allow is not None and ep.name not in allow) or ep.name in block:
                info.status = "disabled"
                continue
            try:
                plugin = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - even sys.exit() at import is isolated
                self.report_broken(info, exc)
                continue
            self.register(plugin, info)

    def call_impl(self, impl: pluggy.HookImpl, **kwargs) -> None:
        """Call one plugin's hook implementation; whatever it raises (sys.exit included, Ctrl-C
        excepted) marks that plugin broken instead of ending the command. primus's own errors
        (a duplicate component name, a bad registration) pass through."""
        from .errors import PrimusError

        info = self.plugins.get(impl.plugin_name)
        try:
            impl.function(**kwargs)
        except (KeyboardInterrupt, PrimusError):
            raise
        except BaseException as exc:  # noqa: BLE001
            if info is None:
                raise
            self.report_broken(info, exc)

    def call_each(self, hook_name: str, **kwargs) -> None:
        """Call every implementation of ``hook_name`` in registration order, each isolated."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            self.call_impl(impl, **kwargs)

    def register(self, plugin: object, info: PluginInfo) -> None:
        """Register one plugin object; reject it if it implements hooks that match no spec."""
        self.plugins[info.name] = info
        try:
            self.pm.register(plugin, name=info.name)
        except ValueError as exc:  # already registered under another name
            self.report_broken(info, exc)
            return
        except pluggy.PluginValidationError as exc:
            self.report_broken(info, exc)
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=info.name)
            self.report_broken(info, f"unknown hook implementation: {exc}")
            return
        info.hooks = sorted(
            impl_name
            for impl_name, caller in vars(self.pm.hook).items()
            if isinstance(caller, pluggy.HookCaller)
            and any(impl.plugin_name == info.name for impl in caller.get_hookimpls())
        )


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, created (and entry points loaded) on first use."""
    global _HOST
    if _HOST is None:
        host = PluginHost()
        _HOST = host
        try:
            host.load_entry_points()
        except BaseException:
            _HOST = None
            raise
    return _HOST


def reset_host() -> None:
    """Forget the process-wide plugin host (``components.reset`` also forgets the components)."""
    global _HOST
    _HOST = None
