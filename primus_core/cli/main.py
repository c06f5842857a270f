"""The ``primus`` command line. Results go to stdout, progress and logs to stderr; a user's
mistake is one ``error: ...`` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from ..components import KINDS, list_components, list_plugins
from ..errors import PrimusError
from ..plugins import get_host
from ..version import __version__
from .params import DEVICE, OUTPUT_DIR, OUTPUT_FILE, OUTPUT_FILE_OR_DIR, POSITIVE_FLOAT

log = logging.getLogger("primus")


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="primus")
@click.option("-v", "--verbose", count=True, help="More logging on stderr.")
def cli(verbose: int) -> None:
    """primus: pretrained IMU encoders - plugins, recipes, training, zoo, evaluation."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "huggingface_hub", "filelock", "urllib3"):
        if not verbose:  # one line per HTTP request is noise on push/pull; -v shows it
            logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------- plugins / components
@cli.group()
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_list(as_json: bool) -> None:
    """Every plugin found through the "primus" entry-point group, with its status."""
    infos = list_plugins()
    if as_json:
        echo_json([p.as_dict() for p in infos])
        return
    rows = [
        [
            p.name,
            p.status,
            f"{p.distribution or '-'} {p.version or ''}".strip(),
            p.module,
            ", ".join(h.removeprefix("register_") for h in p.hooks) or (p.error or ""),
        ]
        for p in infos
    ]
    echo_table(rows, ["plugin", "status", "distribution", "module", "hooks / error"])


@cli.group()
def components() -> None:
    """Registered components (encoders, teachers, losses, augmentations, datasets)."""


@components.command("list")
@click.option("--kind", type=click.Choice(list(KINDS)), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def components_list(kind: str | None, as_json: bool) -> None:
    """Components with their parameters, defaults and the plugin that supplies them."""
    comps = list_components(kind)
    if as_json:
        echo_json([c.as_dict() for c in comps])
        return
    for comp in comps:
        click.echo(f"{comp.kind:<12} {comp.name:<22} [{comp.plugin}]  {comp.description}")
        for p in comp.params():
            default = "(required)" if p["required"] else json.dumps(p["default"])
            about = f"  - {p['description']}" if p["description"] else ""
            click.echo(f"{'':<14}{p['name']}: {p['type']} = {default}{about}")


# ---------------------------------------------------------------- recipes
@cli.group()
def recipes() -> None:
    """Named recipes: registry.yaml, $PRIMUS_HOME/registry.yaml, PRIMUS_REGISTRY, plugins."""


@recipes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def recipes_list(as_json: bool) -> None:
    """Every recipe in registry.yaml, with what it extends and whether it can be built."""
    from ..errors import RecipeError
    from ..registry.layers import load_layers
    from ..registry.recipes import check_recipe, report_problems, resolve_recipe

    layers = load_layers()
    report_problems(layers)
    rows = []
    for name in sorted(layers.recipes):
        entry = layers.recipes[name]
        try:
            loaded = resolve_recipe(name)
        except RecipeError as exc:  # one bad recipe is reported, the others are listed
            log.warning("skipped: %s: recipes.%s: %s", entry.source, name, exc)
            continue
        problems = check_recipe(loaded.recipe)
        rows.append(
            {
                "name": name,
                "layer": entry.layer,
                "source": entry.source,
                "extends": entry.body.get("extends"),
                "description": loaded.recipe.description,
                "losses": [ref.type for ref in loaded.recipe.losses],
                "data": [ref.type for ref in loaded.recipe.data.pretrain],
                "ready": not problems,
                "problems": problems,
            }
        )
    if as_json:
        echo_json(rows)
        return
    echo_table(
        [
            [
                r["name"],
                "+".join(r["losses"]),
                ",".join(r["data"]),
                "yes" if r["ready"] else "no",
                r["layer"],
                r["description"],
            ]
            for r in rows
        ],
        ["recipe", "losses", "data", "ready", "layer", "description"],
    )


@recipes.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def recipes_show(name: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """The resolved recipe NAME (a registry name or a YAML file), after extends and overrides.
    Exits 1 when a component it names is missing or its parameters are invalid."""
    import yaml

    from ..registry.recipes import check_recipe, resolve_recipe

    loaded = resolve_recipe(name, overrides)
    problems = check_recipe(loaded.recipe)
    resolved = loaded.recipe.model_dump(mode="json", exclude_defaults=False)
    if as_json:
        echo_json({"recipe": resolved, "hash": loaded.hash, "problems": problems})
    else:
        click.echo(f"# recipe {loaded.recipe.name} (hash {loaded.hash})")
        click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())
    if problems:
        raise PrimusError(f"recipe '{loaded.recipe.name}' cannot be built: " + "; ".join(problems))


# ---------------------------------------------------------------- embedding
@cli.command()
@click.argument("model")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--head", type=click.Choice(["emb", "ssl", "mmcl"]), default="mmcl", show_default=True
)
@click.option(
    "--out",
    "out_path",
    type=OUTPUT_FILE_OR_DIR,
    required=True,
    help="Where to write the (N, D) embeddings (.npy); a folder when INPUT is a folder or a .txt "
    "list of inputs (one .npy per input; inputs already embedded there are skipped).",
)
@click.option(
    "--rate", type=POSITIVE_FLOAT, help="Sampling rate of INPUT in Hz (resampled to the model's)."
)
@click.option(
    "--stride", type=click.IntRange(min=1), help="Window stride in samples for a (C, T) recording."
)
@click.option("--key", help="Array name inside an .npz file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine for a folder or list INPUT (launches torchrun).",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16", "int8"]),
    default="fp32",
    show_default=True,
    help="Inference precision: bf16 weights and activations, or int8 dynamic quantisation of "
    "the GRU and Linear layers (CPU).",
)
def embed(
    model: str,
    input_path: Path,
    head: str,
    out_path: Path,
    rate: float | None,
    stride: int | None,
    key: str | None,
    batch_size: int,
    device: str,
    nproc: int,
    dtype: str,
) -> None:
    """Embed IMU windows with MODEL (a model directory or zoo name). INPUT is one file, or a
    folder / .txt list of files embedded one output each, sharded over torchrun ranks."""
    import numpy as np

    from ..data import embed_many, shard
    from ..data.embed import embed_windows, prepare_windows, rate_hint, read_input
    from ..device import resolve_device
    from ..paths import save_npy
    from ..zoo.hub import load_pretrained

    many = embed_many.is_many(input_path)
    ctx = click.get_current_context()
    param = next(p for p in ctx.command.params if p.name == "out_path")
    out_path = (OUTPUT_DIR if many else OUTPUT_FILE).convert(str(out_path), param, ctx)
    if many and nproc > 1 and not shard.under_torchrun():
        shard.relaunch(nproc)
    ranks = shard.join() if many else shard.Ranks()
    dev = resolve_device(device)
    if dev.type == "cuda" and ranks.enabled:  # one GPU per local rank
        import torch

        dev = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    encoder = load_pretrained(model, device=str(dev))
    if many:
        summary = embed_many.embed_files(
            encoder,
            input_path,
            out_path,
            head=head,
            batch_size=batch_size,
            device=dev,
            key=key,
            input_rate_hz=rate,
            stride=stride,
            ranks=ranks,
            dtype=dtype,
        )
        shard.leave(ranks)
        if ranks.main:
            click.echo(
                f"{summary['out']}\t{summary['files']} files ({summary['embedded']} embedded, "
                f"{summary['already_done']} already done), {summary['windows']} windows, "
                f"{summary['windows_per_s']:.0f} windows/s, {summary['processes']} process(es)"
            )
        return
    contract = encoder.imu_contract
    array = read_input(input_path, key)
    if rate is None:
        hint = rate_hint(np.asarray(array), contract.window_samples, contract.rate_hz)
        if hint:
            log.warning(hint)
    windows = prepare_windows(
        array,
        channels=contract.num_channels,
        window=contract.window_samples,
        rate_hz=contract.rate_hz,
        input_rate_hz=rate,
        stride=stride,
    )
    start = time.perf_counter()
    vectors = embed_windows(
        encoder, windows, head=head, batch_size=batch_size, device=dev, progress=True, dtype=dtype
    )
    seconds = time.perf_counter() - start
    save_npy(out_path, vectors)
    log.info(
        "embedded %d windows in %.2f s (%.0f windows/s on %s)",
        len(windows),
        seconds,
        len(windows) / max(seconds, 1e-9),
        dev,
    )
    click.echo(f"{out_path}\t{vectors.shape[0]}x{vectors.shape[1]}")


# ---------------------------------------------------------------- zoo (model directories)
@cli.group()
def zoo() -> None:
    """Pretrained models: model directories, the Hub, the reference checkpoint."""


@zoo.command("convert-reference")
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option(
    "--variant",
    type=click.Choice(["stacked-rnn", "stacked-rnn-imu2clip"]),
    default="stacked-rnn",
    show_default=True,
    help="Encoder the checkpoint holds.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
def zoo_convert_reference(ckpt: Path, out_dir: Path, variant: str, overwrite: bool) -> None:
    """Convert a reference PRIMUS checkpoint (Lightning .ckpt or bare state dict) to a model
    directory; the frozen teacher weights are dropped."""
    from ..zoo.modeldir import convert_reference

    click.echo(str(convert_reference(ckpt, out_dir, variant=variant, overwrite=overwrite)))


def add_command_groups() -> None:
    """Command groups that live in their own modules, then the plugins' commands."""
    import importlib

    from .zoo import add_zoo_commands

    add_zoo_commands(zoo)

    for module_name, attr in [
        ("data", "data"),
        ("cache", "cache"),
        ("train", "train"),
        ("eval", "eval_command"),
        ("eval", "experiment"),
        ("demo", "demo"),
        ("bench", "bench"),
    ]:
        try:
            module = importlib.import_module(f"primus_core.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"primus_core.cli.{module_name}":
                raise
            continue
        cli.add_command(getattr(module, attr))
    get_host().call_each("register_commands", cli=cli)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a result, or one ``error: ...`` line on stderr and a non-zero exit."""
    from ..data import shard

    shard.ARGV[:] = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # for --nproc
    try:
        add_command_groups()
        cli.main(args=argv, prog_name="primus", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns any EOFError into Abort
            fail(f"unexpected end of input ({exc.__cause__ or 'EOFError'})", 1)
        click.echo("aborted", err=True)
        sys.exit(130)
    except PrimusError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:  # the file system said no: a full disk, a permission, a missing folder
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}", 1)
    except Exception as exc:  # noqa: BLE001 - a bug still ends in one line, the traceback with -v
        log.debug("traceback", exc_info=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        fail(f"unexpected {type(exc).__name__}: {first} (a bug; rerun with -v for details)", 1)


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
