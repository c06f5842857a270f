"""The whole plugin API of primus: pluggy hook specifications (project name "primus").

A plugin is a module (or object) with functions decorated by ``primus_core.hookimpl`` whose names
and argument names match the specifications below. Plugins are found through the ``primus``
entry-point group. Every hook is documented in CONTRIBUTING.md.
"""

from __future__ import annotations

import pluggy

PROJECT = "primus"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PrimusSpecs:
    """Hook specifications. ``register(name, factory, config=PydanticModel)`` is the same callable
    shape for every component kind: the factory is called with a validated config instance."""

    @hookspec
    def register_encoders(self, register):
        """Register IMU encoders: torch modules mapping (batch, channels, samples) to a dict with
        "emb" and one entry per head, carrying ``imu_contract`` and ``output_sizes``."""

    @hookspec
    def register_teachers(self, register):
        """Register frozen teachers: a ``modality``, an ``output_size``, a stable ``identity``
        string used as cache key, and a batched ``embed(inputs)`` method."""

    @hookspec
    def register_losses(self, register):
        """Register losses: torch modules returning ``(total, {term_name: value})`` that declare
        the teacher modalities they need in ``modalities``."""

    @hookspec
    def register_augmentations(self, register):
        """Register augmentations: batched transforms of (batch, channels, samples) tensors,
        called as ``aug(x, generator)``."""

    @hookspec
    def register_datasets(self, register):
        """Register dataset adapters that read a local copy of a dataset (or a package that ships
        it) and yield IMU windows in an encoder's contract."""

    @hookspec
    def register_recipes(self, register):
        """Add recipes to the registry: ``register(name, mapping)`` with the same fields as a
        registry.yaml recipe (``extends:`` may name any recipe of any layer)."""

    @hookspec
    def register_zoo(self, register):
        """Add zoo entries: ``register(name, mapping, base_dir=None)`` with the same fields as a
        registry.yaml zoo entry; relative ``shipped:`` paths resolve against ``base_dir``
        (default: the plugin module's folder)."""

    @hookspec
    def register_commands(self, cli):
        """Add click commands or groups to the ``primus`` command line (``cli`` is the root
        click group)."""


HOOK_NAMES = [name for name in vars(PrimusSpecs) if name.startswith("register_")]
