"""`primus embed` over many files: a folder (every .npy/.npz/.csv under it) or a list (a .txt file
with one path per line), shared out over torchrun ranks (file f to rank f % world), one output
per input written atomically, so a rerun embeds only the files that have no output yet."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..paths import save_npy
from . import shard
from .embed import embed_windows, prepare_windows, read_input

SUFFIXES = (".npy", ".npz", ".csv")


def is_many(source: Path) -> bool:
    """A folder or a .txt list of inputs (rather than one input file)."""
    return source.is_dir() or source.suffix.lower() == ".txt"


def list_inputs(source: Path) -> list[tuple[Path, Path]]:
    """(input, output name relative to the output folder) for every input, sorted."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        pairs = [(p, p.relative_to(source).with_suffix(".npy")) for p in files]
    else:
        if not source.is_file():
            raise DataError(f"{source}: no such file")
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        files = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
        files = [
            p for p, line in zip(files, lines, strict=True) if line and not line.startswith("#")
        ]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(
                f"{source}: {len(missing)} listed inputs do not exist (first: {missing[0]})"
            )
        pairs = [(p, Path(p.stem + ".npy")) for p in files]
        names = [name for _, name in pairs]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise DataError(f"{source}: two inputs would both be written to {twice}")
    if not pairs:
        raise DataError(f"{source}: no inputs ({', '.join(SUFFIXES)} files)")
    return pairs


def embed_files(
    encoder: Any,
    source: Path,
    out_dir: Path,
    *,
    head: str,
    batch_size: int,
    device: Any,
    key: str | None = None,
    input_rate_hz: float | None = None,
    stride: int | None = None,
    ranks: shard.Ranks | None = None,
    progress: bool = True,
    dtype: str = "fp32",
) -> dict[str, Any]:
    """Embed this rank's share of the inputs of ``source`` into ``out_dir``; returns the summary
    of all ranks: files, embedded now, already done, windows embedded now, seconds, windows/s."""
    from tqdm import tqdm

    ranks = ranks or shard.Ranks()
    pairs = list_inputs(source)
    contract = encoder.imu_contract
    mine = [(i, o) for i, o in shard.strided(pairs, ranks) if not (out_dir / o).exists()]
    started = time.perf_counter()
    windows = 0
    with tqdm(
        total=len(mine),
        desc=f"embed (rank {ranks.rank} of {ranks.world})" if ranks.enabled else "embed",
        unit="file",
        file=sys.stderr,
        disable=not (progress and ranks.main),
        dynamic_ncols=True,
    ) as bar:
        for path, name in mine:
            try:
                array = prepare_windows(
                    read_input(path, key),
                    channels=contract.num_channels,
                    window=contract.window_samples,
                    rate_hz=contract.rate_hz,
                    input_rate_hz=input_rate_hz,
                    stride=stride,
                )
            except DataError as exc:
                message = str(exc)
                where = message if message.startswith(str(path)) else f"{path}: {message}"
                raise DataError(where) from None
            vectors = embed_windows(
                encoder, array, head=head, batch_size=batch_size, device=device, dtype=dtype
            )
            save_npy(out_dir / name, vectors)
            windows += len(array)
            bar.update(1)
            bar.set_postfix(windows_s=f"{windows / max(time.perf_counter() - started, 1e-9):.0f}")
    done = shard.gather((len(mine), windows), ranks)
    seconds = max(time.perf_counter() - started, 1e-9)
    embedded = sum(n for n, _ in done)
    total_windows = sum(w for _, w in done)
    return {
        "files": len(pairs),
        "embedded": embedded,
        "already_done": len(pairs) - embedded,
        "windows": total_windows,
        "processes": ranks.world,
        "seconds": round(seconds, 3),
        "windows_per_s": round(total_windows / seconds, 1),
        "out": str(out_dir),
    }
