"""``primus zoo list|info|pull|push|verify`` (added to cli.py's ``zoo`` group by
:func:`add_zoo_commands`). Results on stdout, progress and notes on stderr."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def zoo_list(as_json: bool) -> None:
    """Every model of registry.yaml's zoo: parameters, data, headline metric, cached or not."""
    from ..zoo.hub import describe, zoo_entries

    rows = [describe(name, entry) for name, entry in sorted(zoo_entries().items())]
    if as_json:
        _echo_json(rows)
        return
    table = [["name", "source", "params", "data", "headline metric", "cached", "layer"]]
    for r in rows:
        metric = (
            f"{r['headline_metric']}={r['headline_value']:.3f}"
            if r["headline_value"] is not None
            else "-"
        )
        table.append(
            [
                r["name"],
                r["source"],
                _fmt_params(r["parameters"]),
                ",".join(r["training_data"]) or "-",
                metric,
                "yes" if r["cached"] else "no",
                r["layer"],
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def zoo_info(name: str, as_json: bool) -> None:
    """Everything registry.yaml says about NAME, and where it is cached."""
    import yaml

    from ..zoo.hub import describe, get_entry

    entry = get_entry(name)
    row = describe(name, entry)
    data = {
        "name": name,
        **entry.model_dump(mode="json", exclude_none=True),
        "parameters": row["parameters"],
        "cached": row["cached"],
        "path": row["path"],
    }
    if as_json:
        _echo_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@click.command("pull")
@click.argument("name")
@click.option("--revision", help="A Hub branch, tag or commit instead of the pinned one.")
@click.option("--offline", is_flag=True, help="Use only the caches and the shipped copies.")
@click.option(
    "--keep-original", is_flag=True, help="Keep a downloaded reference checkpoint after conversion."
)
def zoo_pull(name: str, revision: str | None, offline: bool, keep_original: bool) -> None:
    """Download NAME (if needed), check every file's checksum, print its local directory."""
    from ..zoo.hub import note, pull

    start = time.perf_counter()
    path = pull(name, revision=revision, offline=offline, keep_original=keep_original)
    note(f"{name} ready in {time.perf_counter() - start:.2f} s")
    click.echo(str(path))


@click.command("verify")
@click.argument("name")
def zoo_verify(name: str) -> None:
    """Re-hash the cached files of NAME against registry.yaml (a bad file is deleted, exit 1)."""
    from ..zoo.hub import verify

    report = verify(name)
    for f in report.files:
        click.echo(f"ok  {f.sha256}  {f.size:>12,}  {f.path}")
    total = sum(f.size for f in report.files)
    click.echo(
        f"{name}: {len(report.files)} files, {total:,} bytes verified in {report.seconds:.3f} s",
        err=True,
    )


@click.command("push")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--repo-id", required=True, help="ORG/NAME on the Hub (created if needed).")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--revision", help="Branch to commit to (created if needed; default main).")
@click.option("--overwrite-card", is_flag=True, help="Replace a model card already on the Hub.")
@click.option("--name", "zoo_name", help="Zoo name for the registry.yaml snippet on stderr.")
@click.option("--licence", help="Licence of the weights for the snippet [unspecified].")
def zoo_push(
    model_dir: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    overwrite_card: bool,
    zoo_name: str | None,
    licence: str | None,
) -> None:
    """Upload MODEL_DIR (weights, config, model card) in one commit; print the commit sha."""
    from ..zoo.hub import note, push, registry_snippet

    result = push(
        model_dir, repo_id, private=private, revision=revision, overwrite_card=overwrite_card
    )
    note(f"pushed to {result.repo_id}@{result.revision}; pin it in registry.yaml:")
    name = zoo_name or repo_id.split("/")[1]
    click.echo(registry_snippet(name, result, model_dir, licence), err=True)
    click.echo(result.commit)


def add_zoo_commands(zoo_group: click.Group) -> None:
    """Add list/info/pull/push/verify to cli.py's ``zoo`` group."""
    for command in (zoo_list, zoo_info, zoo_pull, zoo_push, zoo_verify):
        zoo_group.add_command(command)
