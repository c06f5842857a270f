"""``primus demo``: the main job on the embedded default, end to end on real offline data."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .params import OUTPUT_DIR


def section(title: str) -> None:
    click.echo(f"\n== {title}")


SHIPPED_MODEL = "primus-hapt-stackrnn"


@click.command()
@click.option(
    "--windows",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="How many real HAPT windows to embed.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Pretraining steps of the primus-hapt recipe.",
)
@click.option(
    "--out",
    type=OUTPUT_DIR,
    default=Path("runs"),
    show_default=True,
    help="Where the demo's pretraining run goes (a new folder each time).",
)
def demo(windows: int, batch_size: int, steps: int, out: Path) -> None:
    """The whole job on the embedded default: list the recipes, build the PRIMUS encoder, embed
    real UCI HAPT windows, pretrain the primus-hapt recipe, pull a shipped model from the zoo by
    name and evaluate both few-shot on another domain (smartwatch exercises)."""
    import torch

    from ..components import create
    from ..data.embed import embed_windows
    from ..data.windows import load_windows
    from ..registry.recipes import check_recipe, load_recipe, recipe_names

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
    click.echo(
        f"  stacked-rnn: {params:,} parameters, "
        f"{encoder.multiply_adds_per_window() / 1e6:.1f} M multiply-adds per window"
    )
    click.echo(f"  input contract: {encoder.imu_contract.describe()}")

    section("real data: UCI HAPT (waist smartphone, shipped in a PyPI package)")
    start = time.perf_counter()
    ws = load_windows("hapt", encoder.imu_contract)
    click.echo(
        f"  {len(ws.imu):,} windows {tuple(ws.imu.shape[1:])}, {len(set(ws.subjects.tolist()))} "
        f"subjects, {len(ws.class_names)} classes, loaded in {time.perf_counter() - start:.2f} s"
    )

    section("embedding")
    x = ws.imu[: min(windows, len(ws.imu))]
    embed_windows(encoder, x[:batch_size], head="mmcl", batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    vectors = embed_windows(encoder, x, head="mmcl", batch_size=batch_size)
    seconds = time.perf_counter() - start
    click.echo(
        f"  input {tuple(x.shape)} -> mmcl {tuple(vectors.shape)} in {seconds:.2f} s "
        f"({len(x) / seconds:,.0f} windows/s, batch {batch_size}, "
        f"{torch.get_num_threads()} threads, CPU)"
    )

    section(f"pretraining: primus-hapt (SS + MM + NN, MiniLM text teacher), {steps} steps")
    from ..training.trainer import train

    run_dir = out / time.strftime("demo-%Y%m%d-%H%M%S")
    start = time.perf_counter()
    result = train("primus-hapt", ["train.log_every=20"], run_dir, max_steps=steps)
    tail = result.losses[-10:]
    first, last = result.losses[0], sum(tail) / len(tail)
    click.echo(
        f"  {result.steps} steps in {time.perf_counter() - start:.0f} s; loss {first:.2f} at "
        f"step 1, {last:.2f} over the last {len(tail)} (the NN term joins at step 2); best "
        f"validation loss {result.best_val_loss:.3f}"
    )
    click.echo(f"  model directory: {result.model_dir}")

    section(f"zoo: pull the shipped model '{SHIPPED_MODEL}' by name")
    from ..zoo.hub import pull

    start = time.perf_counter()
    shipped = pull(SHIPPED_MODEL)
    click.echo(f"  {shipped} ({time.perf_counter() - start:.2f} s, sha256 checked)")

    section("few-shot evaluation: watch exercises (wrist, 7 classes), linear probe, 2 seeds")
    from ..evaluation.protocol import EvalSettings, evaluate

    start = time.perf_counter()
    for label, model in [("just pretrained", result.model_dir), (SHIPPED_MODEL, SHIPPED_MODEL)]:
        settings = EvalSettings(dataset="watch-exercises", shots=[1, 5], seeds=2)
        res = evaluate(
            str(model),
            settings,
            baselines=("classical",) if label != SHIPPED_MODEL else (),
            progress=False,
        )
        for row in res.summary:
            name = label if row["kind"] == "model" else row["model"]
            click.echo(
                f"  {name:<32} {row['shots']:>2}-shot accuracy "
                f"{row['accuracy_mean']:.3f} +- {row['accuracy_std']:.3f}"
            )
    click.echo(f"  evaluated in {time.perf_counter() - start:.0f} s")
