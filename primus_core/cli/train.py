"""``primus train``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .params import DEVICE, OUTPUT_DIR


@click.command()
@click.argument("recipe")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field."
)
@click.option("--out", type=OUTPUT_DIR, help="Run directory [runs/RECIPE].")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps in all.")
@click.option("--device", type=DEVICE, help="cpu, cuda, cuda:1 ... [recipe's train.device, auto]")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine (launches torchrun; DDP).",
)
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard logs to OUT/tensorboard.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(
    recipe: str,
    overrides: tuple[str, ...],
    out: Path | None,
    resume: bool,
    max_steps: int | None,
    device: str | None,
    nproc: int,
    tensorboard: bool,
    no_progress: bool,
) -> None:
    """Pretrain RECIPE (a registry name or a recipe file) and write the best encoder as a model
    directory (OUT/model), ready for `primus zoo push`."""
    if nproc > 1:
        from ..data import shard

        if not shard.under_torchrun():
            shard.relaunch(nproc)  # this command again under torchrun, one process per rank
    from ..training.trainer import train as run_train

    result = run_train(
        recipe,
        overrides,
        out,
        resume,
        max_steps,
        device,
        progress=not no_progress,
        tensorboard=tensorboard,
    )
    if result.interrupted:
        click.echo(
            f"{result.interrupted}: checkpoint saved at step {result.steps} in "
            f"{result.out}; continue with --resume",
            err=True,
        )
        sys.exit(130)
    click.echo(str(result.model_dir or result.out))
