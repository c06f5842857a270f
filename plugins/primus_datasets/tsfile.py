"""A small reader for the sktime/aeon ``.ts`` text format (multivariate, equal or unequal length).

Header lines start with ``@`` (``@dimensions 6``, ``@classLabel true A B C``, ``@data``), comments
with ``#``; after ``@data`` each line is one series: dimensions separated by ``:``, values by
``,``, then the class label when ``@classLabel true``. ``?`` is a missing value (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from primus_core.errors import DataError


@dataclass
class TSFile:
    series: list[np.ndarray] = field(default_factory=list)  # each (dimensions, length)
    labels: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    header: dict[str, str] = field(default_factory=dict)


def read_ts(path: Path | str) -> TSFile:
    path = Path(path)
    out = TSFile()
    in_data = False
    has_labels = False
    dims: int | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{path}: line {number}: expected a @header before @data")
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
                continue
            out.header[key] = value.strip()
            if key == "classlabel":
                words = value.split()
                has_labels = bool(words) and words[0].lower() == "true"
                out.class_names = words[1:] if has_labels else []
            elif key == "dimensions":
                dims = int(value)
            continue
        parts = line.split(":")
        label = None
        if has_labels:
            label = parts.pop().strip()
            if label not in out.class_names:
                raise DataError(f"{path}: line {number}: unknown class {label!r}")
        if dims is not None and len(parts) != dims:
            raise DataError(f"{path}: line {number}: expected {dims} dimensions, got {len(parts)}")
        try:
            rows = [
                np.array([np.nan if v.strip() == "?" else float(v) for v in p.split(",")])
                for p in parts
            ]
        except ValueError as exc:
            raise DataError(f"{path}: line {number}: {exc}") from None
        if len({len(r) for r in rows}) != 1:
            raise DataError(f"{path}: line {number}: dimensions have different lengths")
        out.series.append(np.stack(rows))
        if label is not None:
            out.labels.append(label)
    if not in_data:
        raise DataError(f"{path}: no @data section")
    return out
