"""``primus eval`` and ``primus experiment benchmark|diversity-vs-size`` (docs/evaluation.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import PrimusError
from .params import DEVICE, FRACTION, OUTPUT_DIR, POSITIVE_FLOAT, TEACHER


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PrimusError(
            f"{option}: expected comma-separated whole numbers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise PrimusError(f"{option}: expected positive whole numbers, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


PROTOCOL_HELP = (
    "How heads are fitted: 'reference' as the PRIMUS reference code did (AdamW 1e-4, warm-up + "
    "cosine, logit scale 1, best head by validation accuracy), 'primus' this project's "
    "(docs/fidelity.md)."
)


def protocol_option():
    return click.option(
        "--protocol",
        type=click.Choice(["reference", "primus"]),
        default="primus",
        show_default=True,
        help=PROTOCOL_HELP,
    )


def eval_options(func):
    """Options shared by ``eval`` and the experiments' evaluation step."""
    options = [
        protocol_option(),
        click.option(
            "--shots",
            default="1,2,5,10,20",
            show_default=True,
            help="Labelled windows per class, comma-separated; 'all' = every one.",
        ),
        click.option(
            "--seeds",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Seeds: each draws the test subjects and the shots.",
        ),
        click.option(
            "--mode",
            type=click.Choice(["linear", "finetune", "zeroshot", "knn"]),
            default="linear",
            show_default=True,
        ),
        click.option(
            "--head",
            type=click.Choice(["mmcl", "emb", "ssl"]),
            help="Encoder output to use [mmcl when present, else emb].",
        ),
        click.option(
            "--init",
            type=click.Choice(["text", "random"]),
            default="text",
            show_default=True,
            help="Head start: class-prompt text embeddings (when "
            "the head's size equals the text teacher's) or random.",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=0),
            help="Training epochs of a head [20; reference protocol: 50 on realworld].",
        ),
        click.option(
            "--min-steps",
            type=click.IntRange(min=0),
            default=300,
            show_default=True,
            help="At least this many optimiser steps of a linear head.",
        ),
        click.option(
            "--finetune-steps",
            type=click.IntRange(min=0),
            default=50,
            show_default=True,
            help="At least this many steps when an encoder is "
            "trained (finetune mode, supervised baseline).",
        ),
        click.option(
            "--lr", type=POSITIVE_FLOAT, help="Head learning rate [1e-3 text init, 1e-2 random]."
        ),
        click.option(
            "--encoder-lr",
            type=POSITIVE_FLOAT,
            default=1e-4,
            show_default=True,
            help="Pretrained encoder's learning rate (finetune).",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True),
        click.option(
            "--test-fraction",
            type=FRACTION,
            default=0.3,
            show_default=True,
            help="Share of subjects held out for testing.",
        ),
        click.option("--knn-k", type=click.IntRange(min=1), default=5, show_default=True),
        click.option(
            "--teacher",
            type=TEACHER,
            help="Text teacher for class prompts [from the model's config].",
        ),
        click.option(
            "--prompts",
            type=click.Path(exists=True, dir_okay=False),
            help="YAML/JSON file: class name -> list of prompts, replacing the dataset's own.",
        ),
        click.option("--device", type=DEVICE, help="cpu, cuda, ... [auto]"),
        click.option(
            "--dtype",
            type=click.Choice(["fp32", "bf16", "int8"]),
            default="fp32",
            show_default=True,
            help="Precision of the frozen embeddings (linear, knn, zeroshot): bf16, or int8 "
            "dynamic quantisation of the GRU and Linear layers (CPU).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def settings_from(dataset: str, kw: dict):
    from ..evaluation.protocol import EvalSettings, parse_shots

    return EvalSettings(
        dataset=dataset,
        shots=parse_shots(kw["shots"]),
        seeds=kw["seeds"],
        mode=kw["mode"],
        protocol=kw["protocol"],
        prompts=kw["prompts"],
        head=kw["head"],
        init=kw["init"],
        epochs=kw["epochs"],
        min_steps=kw["min_steps"],
        finetune_min_steps=kw["finetune_steps"],
        lr=kw["lr"],
        encoder_lr=kw["encoder_lr"],
        batch_size=kw["batch_size"],
        test_fraction=kw["test_fraction"],
        knn_k=kw["knn_k"],
        teacher=kw["teacher"],
        device=kw["device"],
        dtype=kw["dtype"],
    )


@click.command("eval")
@click.argument("model")
@click.option("--dataset", required=True, help="A labelled dataset (primus data list).")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Local copy of a licence-gated dataset (egoexo4d, ego4d, realworld).",
)
@click.option(
    "--set",
    "dataset_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A dataset parameter (repeatable), as in `primus data prepare`.",
)
@eval_options
@click.option("--out", type=OUTPUT_DIR, help="Write eval.json, eval.md and eval.png here.")
@click.option(
    "--baselines/--no-baselines",
    default=True,
    show_default=True,
    help="Untrained encoder, supervised from scratch, classical features.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of tables.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def eval_command(
    model: str,
    dataset: str,
    root: Path | None,
    dataset_sets: tuple[str, ...],
    out: Path | None,
    baselines: bool,
    as_json: bool,
    no_progress: bool,
    **kw,
) -> None:
    """Few-shot / zero-shot evaluation of MODEL (a model directory, a zoo name, or
    random:<encoder>) on held-out subjects of DATASET, with baselines in the same table."""
    from ..evaluation.protocol import BASELINES, evaluate
    from ..evaluation.reports import eval_markdown, write_eval_report
    from .data import dataset_ref

    settings = settings_from(dataset, kw)
    settings.dataset_params = dataset_ref(dataset, root, dataset_sets).params
    result = evaluate(
        model, settings, baselines=BASELINES if baselines else (), progress=not no_progress
    ).to_dict()
    if out is not None:
        paths = write_eval_report(result, out)
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)
    click.echo(json.dumps(result, indent=2) if as_json else eval_markdown(result))


@click.group()
def experiment() -> None:
    """Experiments that pretrain encoders and evaluate them (benchmark, diversity-vs-size)."""


def common_experiment_options(func):
    options = [
        click.option("--steps", type=click.IntRange(min=1), help="Pretraining steps per model."),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a field of every pretraining recipe.",
        ),
        click.option("--shots", help="Labelled windows per class, comma-separated."),
        click.option("--seeds", type=click.IntRange(min=1), help="Evaluation seeds."),
        click.option(
            "--mode",
            type=click.Choice(["linear", "finetune", "knn"]),
            default="linear",
            show_default=True,
        ),
        click.option(
            "--min-steps",
            type=click.IntRange(min=0),
            help="Minimum optimiser steps of each few-shot fit [300].",
        ),
        protocol_option(),
        click.option("--device", type=DEVICE, help="cpu, cuda, ... [auto]"),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON report."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def apply_plan(
    plan,
    shots: str | None,
    seeds: int | None,
    mode: str,
    min_steps: int | None,
    device: str | None,
    protocol: str = "primus",
) -> None:
    from ..evaluation.protocol import parse_shots

    if shots:
        plan.shots = parse_shots(shots)
    if seeds:
        plan.seeds = seeds
    plan.mode, plan.device, plan.protocol = mode, device, protocol
    if min_steps is not None:
        plan.eval_overrides["min_steps"] = min_steps


@experiment.command("benchmark")
@common_experiment_options
@click.option("--recipes", help="Comma-separated recipes [the five *-hapt recipes].")
@click.option(
    "--eval-datasets",
    default="watch-exercises,basicmotions",
    show_default=True,
    help="Cross-domain datasets.",
)
@click.option(
    "--in-domain",
    default="hapt",
    show_default=True,
    help="In-domain dataset, tested on the subjects held out of pretraining ('' = none).",
)
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--out", type=OUTPUT_DIR, default=Path("runs/benchmark"), show_default=True)
def benchmark(
    steps,
    overrides,
    shots,
    seeds,
    mode,
    min_steps,
    protocol,
    device,
    no_progress,
    as_json,
    recipes,
    eval_datasets,
    in_domain,
    baselines,
    out,
) -> None:
    """Pretrain on HAPT with each recipe, evaluate few-shot cross-domain and in-domain, write
    OUT/benchmark.{json,md,png}; rerunning reuses finished pretraining runs."""
    from ..evaluation.experiment import BenchmarkSettings, benchmark_markdown, run_benchmark

    s = BenchmarkSettings(
        overrides=list(overrides), in_domain=in_domain, cross_domain=name_list(eval_datasets)
    )
    if recipes:
        s.recipes = name_list(recipes)
    if steps:
        s.steps = steps
    s.plan.seeds = 3
    apply_plan(s.plan, shots, seeds, mode, min_steps, device, protocol)
    if not baselines:
        s.plan.baselines = []
    report = run_benchmark(s, out, progress=not no_progress)
    click.echo(f"wrote {out}/benchmark.json, .md, .png", err=True)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else benchmark_markdown(report))


@experiment.command("diversity-vs-size")
@common_experiment_options
@click.option("--source", default="hapt", show_default=True, help="Labelled pretraining dataset.")
@click.option("--recipe", default="primus-hapt", show_default=True)
@click.option(
    "--diversities", default="2,4,8", show_default=True, help="Numbers of distinct activities."
)
@click.option(
    "--sizes", default="128,256,512", show_default=True, help="Numbers of pretraining windows."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Pretraining runs per corpus (other seed and activity order).",
)
@click.option("--eval-datasets", default="watch-exercises,basicmotions", show_default=True)
@click.option("--bootstrap", type=click.IntRange(min=100), default=2000, show_default=True)
@click.option(
    "--out",
    type=OUTPUT_DIR,
    default=Path("runs/diversity-vs-size"),
    show_default=True,
)
def diversity_vs_size(
    steps,
    overrides,
    shots,
    seeds,
    mode,
    min_steps,
    protocol,
    device,
    no_progress,
    as_json,
    source,
    recipe,
    diversities,
    sizes,
    repeats,
    eval_datasets,
    bootstrap,
    out,
) -> None:
    """Pretrain corpora that vary the number of activities at a fixed size and the size at a
    fixed number of activities; evaluate cross-domain few-shot; write the table, the plot and
    a verdict with a bootstrap interval to OUT/diversity_vs_size.{json,md,png}."""
    from ..evaluation.experiment import DiversitySettings, diversity_markdown, run_diversity_vs_size

    s = DiversitySettings(
        source=source,
        recipe=recipe,
        diversities=int_list(diversities, "--diversities"),
        sizes=int_list(sizes, "--sizes"),
        repeats=repeats,
        overrides=list(overrides),
        bootstrap=bootstrap,
    )
    if steps:
        s.steps = steps
    s.plan.datasets = name_list(eval_datasets)
    apply_plan(s.plan, shots, seeds, mode, min_steps, device, protocol)
    report = run_diversity_vs_size(s, out, progress=not no_progress)
    click.echo(f"wrote {out}/diversity_vs_size.json, .md, .png", err=True)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else diversity_markdown(report))
