"""Where primus keeps its files, and file checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def primus_home() -> Path:
    """$PRIMUS_HOME, by default ~/.cache/primus (prepared data, teacher cache, zoo)."""
    return Path(os.environ.get("PRIMUS_HOME") or Path.home() / ".cache" / "primus")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
