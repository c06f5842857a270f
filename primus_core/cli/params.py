"""Click parameter types shared by every command: a bad value is refused while the command line is
parsed, as one ``error:`` line, before anything is loaded or written."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click


class PositiveFloat(click.ParamType):
    """A finite number > 0 (a rate, a learning rate); ``min_value`` raises the floor."""

    name = "number"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} must be a finite number greater than 0", param, ctx)
        return number


class Fraction(click.ParamType):
    """A finite number strictly between 0 and 1 (a share of subjects, of windows)."""

    name = "fraction"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (0 < number < 1):  # also refuses nan
            self.fail(f"{value!r} must be between 0 and 1", param, ctx)
        return number


class ComponentName(click.ParamType):
    """The name of a registered component of one kind (``teacher``, ``encoder`` ...)."""

    name = "name"

    def __init__(self, kind: str):
        self.kind = kind

    def convert(self, value, param, ctx):
        from ..components import get_component
        from ..errors import PrimusError

        try:
            get_component(self.kind, str(value))
        except PrimusError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(path: Path, param, ctx, kind: click.ParamType) -> None:
    """``path`` (or, when it does not exist yet, the nearest folder above it) must be writable."""
    base = _nearest_existing(path)
    if base != path.absolute() and not base.is_dir():
        kind.fail(f"{str(base)!r} is a file, so {str(path)!r} cannot be made", param, ctx)
    if not os.access(base, os.W_OK | (os.X_OK if base.is_dir() else 0)):
        kind.fail(f"{str(base)!r} is not writable", param, ctx)


class OutputFile(click.ParamType):
    """A file to be written: not a folder, in a folder that exists or can be made, writable."""

    name = "file"

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.is_dir():
            self.fail(f"{value!r} is a folder; give a file name", param, ctx)
        _check_writable(path, param, ctx, self)
        return path


class OutputFileOrDir(OutputFile):
    """A file, or a folder for a command that writes one file per input: only writability is
    checked here; the command checks it as OUTPUT_FILE or OUTPUT_DIR once it knows which."""

    name = "path"

    def convert(self, value, param, ctx):
        path = Path(value)
        _check_writable(path, param, ctx, self)
        return path


class OutputDir(click.ParamType):
    """A folder to write into: not a file, and writable (or creatable). With ``writable=False``
    (a folder that is also only read, such as a cache root): not a file, nor under one."""

    name = "folder"

    def __init__(self, writable: bool = True):
        self.writable = writable

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.exists() and not path.is_dir():
            self.fail(f"{value!r} is a file, not a folder", param, ctx)
        base = _nearest_existing(path)
        if not base.is_dir():
            self.fail(f"{str(base)!r} is a file, so {value!r} cannot be a folder", param, ctx)
        if self.writable:
            _check_writable(path, param, ctx, self)
        return path


class Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and present on this machine."""

    name = "device"

    def convert(self, value, param, ctx):
        from ..device import resolve_device
        from ..errors import PrimusError

        try:
            resolve_device(str(value))
        except PrimusError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


POSITIVE_FLOAT = PositiveFloat()
FRACTION = Fraction()
TEACHER = ComponentName("teacher")
OUTPUT_FILE = OutputFile()
OUTPUT_FILE_OR_DIR = OutputFileOrDir()
OUTPUT_DIR = OutputDir()
FOLDER = OutputDir(writable=False)
DEVICE = Device()
