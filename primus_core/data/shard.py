"""Scale-out for the data commands (`primus cache build`, `primus data prepare`, `primus embed`)
through torch.distributed: torchrun starts the processes (on one machine with ``--nproc N``, or on
N machines with its own rendezvous), every rank takes a disjoint, deterministic shard of the work,
and small control messages (plans, counts) go over a gloo process group.

Work is always cut the same way whatever the number of ranks (fixed batches, fixed sources, one
file per input), so 1, 2 or 64 processes write the same bytes; only who computes what changes.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .cache import EmbeddingCache

T = TypeVar("T")

# the arguments of the running `primus` command (set by cli.main), relaunched under torchrun
ARGV: list[str] = []


@dataclass(frozen=True)
class Ranks:
    """This process's place in the torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist():
    import torch.distributed as dist  # lazily: the CLI starts without torch

    return dist


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join() -> Ranks:
    """Join torchrun's process group (gloo: control messages only) when there is one; with CUDA,
    make this rank's default GPU its local one."""
    if not under_torchrun():
        return Ranks()
    dist = _dist()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
    return Ranks(dist.get_rank(), dist.get_world_size(), local)


def leave(ranks: Ranks) -> None:
    dist = _dist()
    if ranks.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        _dist().barrier()


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not ranks.enabled:
        return [value]
    out: list[Any] = [None] * ranks.world
    _dist().all_gather_object(out, value)
    return out


def broadcast(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not ranks.enabled:
        return value
    box = [value]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def rank_zero_first(make: Callable[[], T], ranks: Ranks) -> T:
    """``make()`` on rank 0, then on the others (rank 0 prepares shared caches once)."""
    if ranks.main:
        value = make()
    barrier(ranks)
    if not ranks.main:
        value = make()
    return value


def plan_missing(
    store: EmbeddingCache, teacher: Any, inputs: Sequence[Any], ranks: Ranks
) -> tuple[int, list[int]]:
    """(distinct inputs, indices of one input per distinct key not yet in the cache, ordered by
    key), planned on rank 0 and sent to all: every rank agrees on the plan even while others
    write, and the order (so the batches) does not depend on the input order or world size."""
    plan = None
    if ranks.main:
        entries = store.store(teacher.identity)
        entries.create()
        entries.refresh()
        first: dict[bytes, int] = {}
        for i, key in enumerate(store.keys(teacher, inputs)):
            first.setdefault(key, i)
        missing = sorted((k, i) for k, i in first.items() if k not in entries.index)
        plan = (len(first), [i for _, i in missing])
    return broadcast(plan, ranks)


def batches_of(items: Sequence[T], batch_size: int, ranks: Ranks) -> list[T]:
    """This rank's items when ``items`` is cut into batches of ``batch_size`` and batch b goes to
    rank b % world: the batches are the same whatever the world size (so are their results)."""
    mine: list[T] = []
    for b, start in enumerate(range(0, len(items), batch_size)):
        if b % ranks.world == ranks.rank:
            mine.extend(items[start : start + batch_size])
    return mine


def strided(items: Sequence[T], ranks: Ranks) -> list[T]:
    """Items rank, rank + world, ... (whole units of work: files, sources)."""
    return list(items[ranks.rank :: ranks.world])


def torchrun_command(nproc: int, args: Sequence[str], log_dir: str | None = None) -> list[str]:
    """``primus ARGS`` under torchrun with ``nproc`` processes on this machine; torchrun's
    (empty unless redirected) log folders under ``log_dir``, else a new /tmp/torchelastic_*."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *([f"--log-dir={log_dir}"] if log_dir else []),
        "-m",
        "primus_core",
        *args,
    ]


def relaunch(nproc: int) -> None:
    """Run the current command again under torchrun with ``nproc`` local processes, then exit
    with its status (only from a process that torchrun did not start)."""
    args, skip = [], False
    for arg in ARGV:  # torchrun's own parser would read --nproc as --nproc-per-node
        if skip or arg == "--nproc" or arg.startswith("--nproc="):
            skip = arg == "--nproc"
            continue
        args.append(arg)
    # torchrun leaves a /tmp/torchelastic_* folder per run; its logs go where they are removed
    with tempfile.TemporaryDirectory(prefix="primus-torchrun-") as logs:
        code = subprocess.call(torchrun_command(nproc, args, log_dir=logs))
    sys.exit(code)


# --------------------------------------------------------------------------- data prepare
def prepare_sharded(
    ref: Any,
    contract: Any,
    cache_dir: Path | None,
    *,
    force: bool,
    strict: bool,
    progress: bool,
    workers: int,
    ranks: Ranks,
) -> Path:
    """`primus data prepare` over torchrun ranks (on one or many machines sharing ``cache_dir``):
    rank r reads sources r, r + world, ... (each with ``workers`` processes) into a staging folder
    next to the cache, one file per source written atomically (a rerun keeps them); then rank 0
    merges them in source order into the one memory-mapped cache, the bytes one process writes."""
    from .pool import read_sources
    from .windows import cache_path, create_adapter, prepare

    if not ranks.enabled:
        return prepare(
            ref, contract, cache_dir, force=force, strict=strict, progress=progress, workers=workers
        )
    adapter = create_adapter(ref)
    final = cache_path(adapter, contract, Path(cache_dir) if cache_dir else None)
    if final.exists() and not force:
        barrier(ranks)
        return prepare(ref, contract, cache_dir, strict=strict, progress=False)
    staged = final.parent / f".parts-{final.name}"
    if ranks.main:
        if force:
            shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True, exist_ok=True)
    barrier(ranks)
    sources = adapter.sources()
    adapter.report.clear()  # listing-time skips: rank 0 counts them again when merging
    todo = [
        i for i in strided(range(len(sources)), ranks) if not (staged / f"{i:08d}.pkl").exists()
    ]
    for i, part in read_sources(adapter, sources, contract, workers, todo):
        rows = adapter.report.rows()  # this source's rows only: the report is cleared per source
        adapter.report.clear()
        data = pickle.dumps((part, rows), protocol=pickle.HIGHEST_PROTOCOL)
        tmp = staged / f".{i:08d}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, staged / f"{i:08d}.pkl")
    barrier(ranks)
    if ranks.main:
        prepare(
            ref, contract, cache_dir, force=force, strict=strict, progress=progress, staged=staged
        )
        shutil.rmtree(staged, ignore_errors=True)
    barrier(ranks)
    return final
