"""Reading a dataset's sources in source order, by a pool of forked worker processes or from
the per-source parts that torchrun ranks staged (``primus_core.data.shard``): either way the
windows and the skip report are the ones a single process produces."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_POOL: tuple[Any, Sequence[Any], Any] | None = None  # (adapter, sources, contract) in workers


def _read_one(index: int) -> tuple[Any, list[dict[str, Any]]]:
    adapter, sources, contract = _POOL
    adapter.report.clear()
    part = adapter.read(sources[index], contract)
    return part, adapter.report.rows()


def _merge_report(adapter: Any, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        adapter.report.add(r["reason"], r["count"], r["unit"], r["example"], kept=r["kept"])


def read_sources(
    adapter: Any, sources: Sequence[Any], contract: Any, workers: int = 1, indices=None
) -> Iterator[tuple[int, Any]]:
    """(index, windows) of ``sources`` (all, or ``indices``) in order, read by a pool of
    ``workers`` forked processes; what the workers skipped is added to ``adapter.report`` in
    source order, so the report is the one a single process writes."""
    global _POOL
    indices = list(range(len(sources)) if indices is None else indices)
    if workers <= 1 or len(indices) <= 1 or "fork" not in mp.get_all_start_methods():
        for i in indices:
            yield i, adapter.read(sources[i], contract)
        return
    _POOL = (adapter, sources, contract)
    try:
        with mp.get_context("fork").Pool(min(workers, len(indices))) as pool:
            for i, (part, rows) in zip(indices, pool.imap(_read_one, indices), strict=True):
                _merge_report(adapter, rows)
                yield i, part
    finally:
        _POOL = None


def read_staged(adapter: Any, staged: Path, count: int) -> Iterator[tuple[int, Any]]:
    """The parts the ranks wrote (``write_staged``), in source order."""
    for i in range(count):
        with open(staged / f"{i:08d}.pkl", "rb") as fh:
            part, rows = pickle.load(fh)
        _merge_report(adapter, rows)
        yield i, part
