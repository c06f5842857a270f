"""The ``primus`` command line, one module per command group. Only the ``primus`` entry point
(and ``python -m primus_core``) imports this package; the library never does."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
