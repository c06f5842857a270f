"""``primus cache``: precompute a recipe's teacher embeddings, and describe the cache.
Results go to stdout; progress bars to stderr."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from .cache import EmbeddingCache
from .cli_params import FOLDER


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
) -> list[dict[str, Any]]:
    """Embed every teacher input of the recipe's pretraining data; one row per (data, teacher)."""
    from . import load_recipe
    from .components import create
    from .data import load_windows

    recipe = load_recipe(recipe_name, overrides)
    teachers = [create("teacher", ref.type, **ref.params) for ref in recipe.teachers]
    if not teachers:
        return []
    contract = create("encoder", recipe.encoder.type, **recipe.encoder.params).imu_contract
    store = EmbeddingCache(root, progress=progress)
    rows = []
    for ref in recipe.data.pretrain:
        windows = load_windows(ref, contract)
        for teacher in teachers:
            inputs = windows.narrations if teacher.modality == "text" else windows.videos
            present = [
                x for x in (inputs or []) if x is not None and not (isinstance(x, str) and not x)
            ]
            before, start = store.misses, time.perf_counter()
            store.get_or_compute(teacher, present, batch_size=batch_size)
            rows.append(
                {
                    "data": ref.type,
                    "teacher": teacher.identity.split("|")[0],
                    "identity": teacher.identity,
                    "windows": len(windows),
                    "inputs": len(present),
                    "computed": store.misses - before,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
    return rows


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
    help="Inputs per teacher forward pass.",
)
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def build(
    recipe: str, overrides: tuple[str, ...], batch_size: int, root: Path | None, as_json: bool
) -> None:
    """Precompute every teacher embedding of RECIPE's data (a second run computes nothing)."""
    rows = build_cache(recipe, overrides, root, batch_size)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"recipe '{recipe}' has no teachers: nothing to cache")
        return
    _table(
        [
            [
                r["data"],
                r["teacher"],
                r["windows"],
                r["inputs"],
                r["computed"],
                f"{r['seconds']:.1f}",
            ]
            for r in rows
        ],
        ["data", "teacher", "windows", "inputs", "computed", "seconds"],
    )


@cache.command("info")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(root: Path | None, as_json: bool) -> None:
    """Size, entries per teacher, and hit/miss counts of the cache."""
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
