"""Temporary files and folders of writers that were killed are cleaned by the next writer, and
those of live writers are left alone (issue 13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys

from primus_core.config import IMUContract
from primus_core.data.windows import cache_path, create_adapter, prepare
from primus_core.paths import remove_dead_temps


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_remove_dead_temps_keeps_live_writers_and_other_names(tmp_path):
    dead, live = dead_pid(), os.getpid()
    for name in (
        f".checkpoint.pt.tmp-{dead}",
        f".checkpoint.pt.tmp-{live}",
        f".checkpoint.pt.tmp-{dead}-abc",
        "checkpoint.pt",
        ".checkpoint.pt.tmp-notapid",
    ):
        (tmp_path / name).write_text("x")
    (tmp_path / f".checkpoint.pt.tmp-{dead}-dir").mkdir()
    removed = remove_dead_temps(tmp_path, ".checkpoint.pt.tmp-")
    assert sorted(p.name for p in removed) == sorted(
        [
            f".checkpoint.pt.tmp-{dead}",
            f".checkpoint.pt.tmp-{dead}-abc",
            f".checkpoint.pt.tmp-{dead}-dir",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".checkpoint.pt.tmp-{live}", "checkpoint.pt", ".checkpoint.pt.tmp-notapid"]
    )


def test_prepare_removes_cache_folders_of_killed_prepares(tmp_path):
    contract = IMUContract()
    final = cache_path(create_adapter("watch-exercises"), contract, tmp_path)
    tmp_path.mkdir(exist_ok=True)
    dead_dir = tmp_path / f".tmp-{final.name}-{dead_pid()}-k1ll3d"
    live_dir = tmp_path / f".tmp-{final.name}-{os.getpid()}-w0rk1n"
    for folder in (dead_dir, live_dir):
        folder.mkdir()
        (folder / "imu.npy").write_bytes(b"half a file")
    assert prepare("watch-exercises", contract, tmp_path, progress=False) == final
    assert not dead_dir.exists() and live_dir.exists()
    assert (final / "meta.json").is_file()
