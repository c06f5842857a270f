"""The installed version of primus."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("primus-zoo")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
