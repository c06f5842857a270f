"""Where primus keeps its files, file checksums and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any


def primus_home() -> Path:
    """$PRIMUS_HOME, by default ~/.cache/primus (prepared data, teacher cache, zoo)."""
    return Path(os.environ.get("PRIMUS_HOME") or Path.home() / ".cache" / "primus")


def current_umask() -> int:
    """The process umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_modes(folder: Path) -> None:
    """Give a folder made from temporary files (mkdtemp: 0700, safetensors: 0600) the modes a
    plain mkdir/open gives: 0777 for folders and 0666 for files, less the umask."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, OSError):
        return False
    return True


def remove_dead_temps(folder: Path, prefix: str) -> list[Path]:
    """Remove the files and folders ``<prefix><pid>`` or ``<prefix><pid>-<random>`` in ``folder``
    whose writing process ``pid`` no longer runs (it was killed mid-write); returns them."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)(?:-\w+)?")
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        found = pattern.fullmatch(path.name)
        if found is None or pid_alive(int(found.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (temporary name in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 is not what a user expects
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npy(path: Path, array: Any) -> Path:
    """Write an array as ``path`` (.npy) atomically: to ``.<name>.tmp-<pid>`` in the same folder,
    then os.replace. A temporary left by a writer that died is removed by the next writer of
    that name, and never ends in .npy (so it is never taken for an output or an input)."""
    import numpy as np  # lazily: light commands import this module without numpy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(path.parent, f".{path.name}.tmp-")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
