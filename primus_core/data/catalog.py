"""The prepared-cache catalogue: where caches live and what each one holds, read from its
``meta.json`` alone. Kept free of numpy so that ``primus data list`` answers at once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..paths import primus_home

CACHE_FORMAT = 1


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset adapter reads: shown by ``primus data list|info``."""

    name: str
    description: str
    placement: str
    native_rate_hz: float
    channels: list[str]
    units: list[str]
    licence: str
    citation: str
    url: str
    labelled: bool
    classes: list[str] = field(default_factory=list)
    gated: bool = False  # needs a local copy obtained under a licence agreement

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_cache_dir() -> Path:
    return primus_home() / "data"


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: not a prepared dataset (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: corrupt metadata ({exc}); delete {folder} and prepare again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or "files" not in meta:
        raise DataError(f"{path}: unknown cache format; delete {folder} and prepare again")
    return meta


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def list_prepared(cache_dir: Path | str | None = None) -> list[dict[str, Any]]:
    """Every prepared cache under ``cache_dir``: folder, dataset, windows, params, bytes."""
    root = Path(cache_dir or default_cache_dir())
    rows = []
    if not root.is_dir():
        return rows
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = read_meta(folder)
        except DataError:
            continue
        rows.append(
            {
                "folder": str(folder),
                "dataset": meta["dataset"],
                "windows": meta["windows"],
                "params": meta["params"],
                "contract": meta["contract"],
                "bytes": folder_bytes(folder),
            }
        )
    return rows
