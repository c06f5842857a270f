"""Exceptions that carry a user-facing one-line message; the CLI prints them without traceback."""


class PrimusError(Exception):
    """Base class: a mistake the user can fix (bad name, bad file, bad value)."""


class PluginError(PrimusError):
    """A plugin failed to import, to register, or implements an unknown hook."""


class ComponentError(PrimusError):
    """Unknown component, duplicate name, or invalid component parameters."""


class RecipeError(PrimusError):
    """A recipe cannot be found, parsed, extended or validated."""


class ModelDirError(PrimusError):
    """A model directory or checkpoint is missing, corrupt or inconsistent."""


class DataError(PrimusError):
    """Input data is missing, malformed or does not match the encoder's contract."""
