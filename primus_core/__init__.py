"""primus: a plugin-based model zoo for IMU encoders pretrained the PRIMUS way."""

from __future__ import annotations

from .components import create, list_components
from .errors import PrimusError
from .specs import hookimpl
from .version import __version__

__all__ = [
    "PrimusError",
    "__version__",
    "create",
    "embed",
    "hookimpl",
    "list_components",
    "load_pretrained",
    "load_recipe",
]


def load_recipe(name_or_path, overrides=()):
    """Load a recipe by registry name or file path, applying ``a.b=value`` overrides."""
    from .registry.recipes import load_recipe as _load

    return _load(name_or_path, overrides)


def load_pretrained(name_or_dir, device=None):
    """Load an encoder from a model directory or a zoo name (eval mode)."""
    from .zoo.hub import load_pretrained as _load

    return _load(name_or_dir, device=device)


def embed(model, array, *, rate_hz=None, layout="CT", head="mmcl", stride=None, **kwargs):
    """Embed IMU data: ``model`` is an encoder, a model directory, a zoo name or an
    ``hf-hub:ORG/NAME[@REV]`` id; ``array`` is one (C, T) recording (``layout="TC"`` for (T, C))
    at ``rate_hz`` (resampled to the model's rate, windowed every ``stride`` samples) or (N, C, T)
    windows. Returns (N, D) float32 vectors of ``head`` ("emb", "ssl" or "mmcl")."""
    from .data.embed import embed as _embed

    return _embed(model, array, rate_hz=rate_hz, layout=layout, head=head, stride=stride, **kwargs)
