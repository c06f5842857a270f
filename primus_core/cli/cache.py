"""``primus cache``: precompute a recipe's teacher embeddings, and describe the cache.
Results go to stdout; progress bars to stderr."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from .params import FOLDER


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[Any]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


root_option = click.option(
    "--root",
    type=FOLDER,
    default=None,
    help="Cache folder (default $PRIMUS_HOME/cache/teachers).",
)


@click.group("cache")
def cache() -> None:
    """Teacher-embedding cache: teachers never embed the same input twice."""


def build_cache(
    recipe_name: str,
    overrides: tuple[str, ...] = (),
    root: Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    skip_bad_videos: bool = False,
) -> list[dict[str, Any]]:
    """Embed every teacher input of the recipe's pretraining corpus (as training selects it);
    one row per teacher. Under torchrun each rank embeds its share of the missing inputs
    (primus_core.data.shard.plan_missing); every rank returns the same rows."""
    from .. import load_recipe
    from ..components import create
    from ..data import shard
    from ..data.cache import EmbeddingCache, teacher_has_input
    from ..training.trainer import load_data

    ranks = shard.join()
    recipe = load_recipe(recipe_name, overrides)
    teachers = [create("teacher", ref.type, **ref.params) for ref in recipe.teachers]
    if not teachers:
        return []
    if skip_bad_videos:
        for teacher in teachers:
            if "skip_bad_videos" in type(teacher.config).model_fields:
                teacher.config = teacher.config.model_copy(update={"skip_bad_videos": True})
    contract = create("encoder", recipe.encoder.type, **recipe.encoder.params).imu_contract
    windows = shard.rank_zero_first(lambda: load_data(recipe, contract), ranks)
    store = EmbeddingCache(root, progress=progress and ranks.main)
    rows = []
    for teacher in teachers:
        started = time.perf_counter()
        inputs = windows.narrations if teacher.modality == "text" else windows.videos
        present = [x for x in (inputs or []) if teacher_has_input(teacher, x)]
        skipped_before = len(getattr(teacher, "skipped", []))
        distinct, missing = shard.plan_missing(store, teacher, present, ranks)
        mine = shard.batches_of([present[i] for i in missing], batch_size, ranks)
        store.get_or_compute(teacher, mine, batch_size=batch_size)
        if ranks.main:  # every window's input found in the cache (the misses counted above)
            store.record_hits(teacher.identity, len(present) - len(missing))
        done = shard.gather(
            (
                store.last.computed,
                store.last.frames,
                getattr(teacher, "skipped", [])[skipped_before:],
            ),
            ranks,
        )
        computed = sum(c for c, _, _ in done)
        frames = sum(f for _, f, _ in done)
        reasons = [r for _, _, rs in done for r in rs]
        seconds = max(time.perf_counter() - started, 1e-9)
        rows.append(
            {
                "teacher": teacher.identity.split("|")[0],
                "modality": teacher.modality,
                "windows": len(windows.imu),
                "with_input": len(present),
                "distinct": distinct,
                "computed": computed,
                "cached": distinct - len(missing),
                "skipped": len(missing) - computed,
                "skip_reasons": dict(Counter(reasons)),
                "processes": ranks.world,
                "seconds": round(seconds, 3),
                "inputs_per_s": round(computed / seconds, 3) if computed else None,
                "frames_per_s": round(frames / seconds, 1) if frames else None,
                "identity": teacher.identity,
            }
        )
    return rows


def _throughput(row: dict[str, Any]) -> str:
    if row["inputs_per_s"] is None:
        return "-"
    unit = "clips" if row["modality"] == "video" else "texts"
    text = f"{row['inputs_per_s']:.1f} {unit}/s"
    if row["frames_per_s"] is not None:
        text += f", {row['frames_per_s']:.0f} frames/s"
    return text


@cache.command("build")
@click.argument("recipe")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field (repeatable), e.g. --set data.pretrain.0.type=hapt.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Inputs per teacher batch (each batch is stored as it completes).",
)
@click.option(
    "--skip-bad-videos",
    is_flag=True,
    help="A video that cannot be read masks its windows (counted, with the reason) instead of "
    "stopping the build.",
)
@root_option
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine (launches torchrun; each embeds its share of the inputs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def build(
    recipe: str,
    overrides: tuple[str, ...],
    batch_size: int,
    skip_bad_videos: bool,
    root: Path | None,
    nproc: int,
    as_json: bool,
) -> None:
    """Precompute every teacher embedding of RECIPE's data (a second run computes nothing).
    Under torchrun (or with --nproc) the missing inputs are shared out over the ranks."""
    from ..data import shard

    if nproc > 1 and not shard.under_torchrun():
        shard.relaunch(nproc)
    ranks = shard.join()
    rows = build_cache(
        recipe, overrides, root, batch_size, progress=not as_json, skip_bad_videos=skip_bad_videos
    )
    shard.leave(ranks)
    if not ranks.main:
        return
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"recipe '{recipe}' has no teachers: nothing to cache")
        return
    _table(
        [
            [
                r["teacher"],
                r["modality"],
                r["windows"],
                r["with_input"],
                r["computed"],
                r["cached"],
                r["skipped"],
                f"{r['seconds']:.1f}",
                _throughput(r),
            ]
            for r in rows
        ],
        [
            "teacher",
            "modality",
            "windows",
            "with input",
            "computed",
            "cached",
            "skipped",
            "seconds",
            "throughput",
        ],
    )
    for r in rows:
        for reason, count in r["skip_reasons"].items():
            click.echo(f"skipped {count} ({r['teacher']}): {reason}")


@cache.command("info")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(root: Path | None, as_json: bool) -> None:
    """Size, entries per teacher, and hit/miss counts of the cache."""
    from ..data.cache import EmbeddingCache

    summary = EmbeddingCache(root, progress=False).info()
    if as_json:
        _echo_json(summary)
        return
    click.echo(
        f"cache: {summary['root']}  ({_size(summary['size_bytes'])}, "
        f"{summary['hits']} hits, {summary['misses']} misses)"
    )
    if not summary["teachers"]:
        click.echo("no teacher embeddings cached yet (primus cache build RECIPE)")
        return
    _table(
        [
            [t["identity"], t["entries"], t["dim"], _size(t["size_bytes"]), t["hits"], t["misses"]]
            for t in summary["teachers"]
        ],
        ["teacher", "entries", "dim", "size", "hits", "misses"],
    )
