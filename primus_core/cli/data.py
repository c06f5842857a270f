"""``primus data``: prepare datasets into the memory-mapped cache and describe them.
Results go to stdout; progress bars to stderr."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import yaml

from ..components import dataset_info
from ..config import ComponentRef, IMUContract
from ..data.catalog import default_cache_dir, folder_bytes, list_prepared, read_meta
from ..errors import DataError
from .params import FOLDER, POSITIVE_FLOAT


def dataset_ref(name: str, root: Path | None, sets: tuple[str, ...]) -> ComponentRef:
    """The dataset NAME with ``--root`` and ``--set key=value`` parameters (YAML values)."""
    params: dict = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--set expects key=value, got {item!r}")
        params[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    if root is not None:
        params["root"] = str(root)
    return ComponentRef(type=name, **params)


def _contract(rate_hz: float | None, window_samples: int | None) -> IMUContract:
    base = IMUContract()
    return IMUContract(
        rate_hz=rate_hz or base.rate_hz, window_samples=window_samples or base.window_samples
    )


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _common(func):
    options = [
        click.option("--root", type=click.Path(path_type=Path), help="Local copy of the dataset."),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="A dataset parameter (repeatable), e.g. --set position=waist.",
        ),
        click.option("--rate-hz", type=POSITIVE_FLOAT, help="Contract sampling rate (default 50)."),
        click.option(
            "--window-samples",
            type=click.IntRange(min=1),
            help="Contract window length (default 250).",
        ),
        click.option(
            "--cache-dir",
            type=FOLDER,
            help="Cache root (default $PRIMUS_HOME/data).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def data() -> None:
    """Datasets: prepare the windowed cache, list and describe datasets."""


@data.command("prepare")
@click.argument("name")
@_common
@click.option("--force", is_flag=True, help="Rebuild even when a cache exists.")
@click.option("--strict", is_flag=True, help="Fail (and keep no cache) when anything is skipped.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes reading sources (takes, recordings) on this machine; same bytes for any N.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torchrun ranks on this machine (with torchrun: across machines sharing --cache-dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_prepare(
    name, root, sets, rate_hz, window_samples, cache_dir, force, strict, workers, nproc, as_json
) -> None:
    """Read dataset NAME once and write its windows to the memory-mapped cache; ends with a
    table of what was kept and what was skipped, by reason."""
    from ..data import shard

    if nproc > 1 and not shard.under_torchrun():
        shard.relaunch(nproc)
    ranks = shard.join()
    ref = dataset_ref(name, root, sets)
    contract = _contract(rate_hz, window_samples)
    t0 = time.perf_counter()
    folder = shard.prepare_sharded(
        ref,
        contract,
        cache_dir,
        force=force,
        strict=strict,
        progress=not as_json and ranks.main,
        workers=workers,
        ranks=ranks,
    )
    shard.leave(ranks)
    if not ranks.main:
        return
    meta = read_meta(folder)
    fresh = time.perf_counter() - t0 >= meta["prepare_seconds"]
    report = meta.get("report", {"kept": {"windows": meta["windows"]}, "rows": []})
    if as_json:
        _echo_json(
            {
                "name": name,
                "folder": str(folder),
                "windows": meta["windows"],
                "bytes": folder_bytes(folder),
                "fresh": fresh,
                "prepare_seconds": meta["prepare_seconds"],
                "report": report,
            }
        )
        return
    state = f"prepared in {meta['prepare_seconds']:.1f} s" if fresh else "already prepared"
    click.echo(
        f"{name}: {meta['windows']} windows, {folder_bytes(folder) / 1e6:.1f} MB, {state}: {folder}"
    )
    for line in report_table(report):
        click.echo(line)


def report_table(report: dict) -> list[str]:
    """The kept/skipped table printed at the end of `primus data prepare`."""
    kept = report.get("kept", {})
    lines = [
        f"  {'kept':<8} {kept.get('windows', 0):>8} windows from {kept.get('sources', '?')} sources"
    ]
    for row in report.get("rows", []):
        status = "repaired" if row["kept"] else "skipped"
        where = f"  (first: {row['example']})" if row["example"] else ""
        lines.append(
            f"  {status:<8} {row['count']:>8} {row['unit']}{'s' if row['count'] != 1 else ''}"
            f": {row['reason']}{where}"
        )
    if not report.get("rows"):
        lines.append(f"  {'skipped':<8} {0:>8} (nothing)")
    return lines


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--cache-dir", type=FOLDER, help="Cache root (default $PRIMUS_HOME/data).")
def data_list(as_json: bool, cache_dir: Path | None) -> None:
    """Registered datasets, what they need, and how many prepared caches each has."""
    from ..components import list_components

    prepared = list_prepared(cache_dir)
    rows = []
    for comp in list_components("dataset"):
        info = dataset_info(comp)
        caches = [p for p in prepared if p["dataset"] == comp.name]
        rows.append(
            {
                "name": comp.name,
                "plugin": comp.plugin,
                "description": info.description if info else comp.description,
                "placement": info.placement if info else "",
                "native_rate_hz": info.native_rate_hz if info else None,
                "labelled": info.labelled if info else None,
                "classes": len(info.classes) if info else None,
                "gated": info.gated if info else None,
                "licence": info.licence if info else "",
                "url": info.url if info else "",
                "prepared": caches,
            }
        )
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        access = "local copy (licence)" if row["gated"] else "offline (PyPI)"
        click.echo(
            f"{row['name']:<16} {access:<21} {row['native_rate_hz'] or '?':>6} Hz  "
            f"{len(row['prepared'])} prepared  {row['placement']}"
        )


@data.command("info")
@click.argument("name")
@_common
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_info(name, root, sets, rate_hz, window_samples, cache_dir, as_json) -> None:
    """Windows, classes, subjects, rate and size on disk of dataset NAME (prepared if needed)."""
    import numpy as np

    from ..data.windows import cache_path, create_adapter, open_cache, prepare

    ref = dataset_ref(name, root, sets)
    contract = _contract(rate_hz, window_samples)
    adapter = create_adapter(ref)
    folder = cache_path(adapter, contract, cache_dir)
    if not folder.exists():
        folder = prepare(ref, contract, cache_dir)
    meta = read_meta(folder)
    ws = open_cache(folder, verify=False)
    counts = (
        np.bincount(ws.labels[ws.labels >= 0], minlength=len(ws.class_names)).tolist()
        if len(ws.class_names)
        else []
    )
    result = {
        "name": name,
        "folder": str(folder),
        "windows": meta["windows"],
        "classes": dict(zip(ws.class_names, counts, strict=True)),
        "subjects": meta["subjects"],
        "rate_hz": contract.rate_hz,
        "window_samples": contract.window_samples,
        "channels": contract.channels,
        "narrations": ws.narrations is not None,
        "videos": ws.videos is not None,
        "bytes": folder_bytes(folder),
        "prepare_seconds": meta["prepare_seconds"],
        "params": meta["params"],
        "info": meta["info"],
    }
    if as_json:
        _echo_json(result)
        return
    info = meta["info"]
    click.echo(f"{name}: {info['description']}")
    click.echo(
        f"  windows      {result['windows']} x {len(contract.channels)} channels x "
        f"{contract.window_samples} samples at {contract.rate_hz:g} Hz"
    )
    click.echo(f"  subjects     {result['subjects']}")
    if result["classes"]:
        click.echo(
            "  classes      " + ", ".join(f"{k} ({v})" for k, v in result["classes"].items())
        )
    click.echo(
        f"  native       {info['native_rate_hz']:g} Hz, {info['placement']}, "
        f"units {', '.join(dict.fromkeys(info['units']))}"
    )
    click.echo(f"  size on disk {result['bytes'] / 1e6:.1f} MB in {folder}")
    click.echo(f"  licence      {info['licence']}")
    click.echo(f"  source       {info['url']}")


__all__ = ["data", "default_cache_dir"]
