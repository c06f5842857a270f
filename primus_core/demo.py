"""``primus demo``: the main job on the embedded default, end to end on real offline data."""

from __future__ import annotations

import time

import click


def section(title: str) -> None:
    click.echo(f"\n== {title}")


@click.command()
@click.option("--windows", type=click.IntRange(min=1), default=2048, show_default=True,
              help="How many real HAPT windows to embed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
def demo(windows: int, batch_size: int) -> None:
    """List the recipes, build the PRIMUS encoder and embed real UCI HAPT windows."""
    import torch

    from .components import create
    from .data import load_windows
    from .embed import embed_windows
    from .recipes import check_recipe, load_recipe, recipe_names

    section("recipes (registry.yaml)")
    for name in recipe_names():
        recipe = load_recipe(name)
        ready = "ready" if not check_recipe(recipe) else "needs components"
        data = ",".join(ref.type for ref in recipe.data.pretrain)
        click.echo(f"  {name:<20} {'+'.join(r.type for r in recipe.losses):<12} {data:<10} {ready}")

    section("PRIMUS encoder")
    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn").eval()
    params = sum(p.numel() for p in encoder.parameters())
    click.echo(f"  stacked-rnn: {params:,} parameters, "
               f"{encoder.multiply_adds_per_window() / 1e6:.1f} M multiply-adds per window")
    click.echo(f"  input contract: {encoder.imu_contract.describe()}")

    section("real data: UCI HAPT (waist smartphone, shipped in a PyPI package)")
    start = time.perf_counter()
    ws = load_windows("hapt", encoder.imu_contract)
    click.echo(f"  {len(ws.imu):,} windows {tuple(ws.imu.shape[1:])}, {len(set(ws.subjects.tolist()))} "
               f"subjects, {len(ws.class_names)} classes, loaded in {time.perf_counter() - start:.2f} s")

    section("embedding")
    x = ws.imu[: min(windows, len(ws.imu))]
    embed_windows(encoder, x[:batch_size], head="mmcl", batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    out = embed_windows(encoder, x, head="mmcl", batch_size=batch_size)
    seconds = time.perf_counter() - start
    click.echo(f"  input {tuple(x.shape)} -> mmcl {tuple(out.shape)} in {seconds:.2f} s "
               f"({len(x) / seconds:,.0f} windows/s, batch {batch_size}, "
               f"{torch.get_num_threads()} threads, CPU)")
