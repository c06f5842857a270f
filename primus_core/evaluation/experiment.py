"""Experiments that pretrain several encoders and evaluate them few-shot (docs/evaluation.md):

- ``benchmark``: pretrain on HAPT with the embedded-default recipes, then evaluate cross-domain
  (watch exercises, BasicMotions) and in-domain on the HAPT subjects the pretraining held out.
- ``diversity_vs_size``: corpora that vary the number of distinct activities at a fixed window
  count and the window count at a fixed number of activities, each pretrained with the same
  recipe and step budget, evaluated cross-domain (and in-domain on the subjects its pretraining
  held out); a verdict with a bootstrap interval, a mixed-effects fit, the power, and which
  diversity measure predicts transfer (primus_core/diversity.py, docs/diversity.md). Every
  finished corpus (model, evaluation, measures) is reused by a rerun.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.windows import WindowSet, load_windows, split_by_subject
from ..errors import PrimusError
from ..paths import write_json, write_text
from .protocol import (
    BASELINES,
    EvalSettings,
    LoadedModel,
    environment,
    evaluate,
    labelled,
    load_model,
    prepare_dataset,
)
from .reports import (
    markdown_table,
    mean_std,
    plot_lines,
    save_figure,
    summarise,
)

log = logging.getLogger("primus.experiment")

BENCHMARK_RECIPES = (
    "primus-hapt",
    "primus-ss-mm-hapt",
    "imu2clip-hapt",
    "simclr-hapt",
    "supervised-hapt",
)
CROSS_DOMAIN = ("watch-exercises", "basicmotions")
DONE = "pretrained.json"
MIN_SAMPLES_FOR_CALL = 5  # seeds x repeats below which the verdict makes no call  # marks a finished pretraining run inside its folder


class ExperimentError(PrimusError):
    """Bad experiment settings (an empty grid, a corpus that cannot be built, ...)."""


# ---------------------------------------------------------------------------- pretraining
def pretrain(
    recipe: str,
    overrides: Sequence[str],
    out: Path,
    steps: int | None,
    device: str | None,
    progress: bool,
) -> Path:
    """train() once into ``out``; a finished run is reused, an interrupted one resumed."""
    from ..training.trainer import train

    marker = out / DONE
    if marker.is_file() and (out / "model").is_dir():
        log.info("reusing %s", out)
        return out / "model"
    resume = out.is_dir() and (out / "checkpoint.pt").is_file()
    started = time.perf_counter()
    result = train(
        recipe,
        list(overrides),
        out,
        resume=resume,
        max_steps=steps,
        device=device,
        progress=progress,
    )
    if result.interrupted:
        raise ExperimentError(
            f"pretraining {recipe} was interrupted ({result.interrupted}); "
            "run the same command again to resume"
        )
    if result.model_dir is None:
        raise ExperimentError(f"pretraining {recipe} wrote no model directory in {out}")
    write_json(
        marker,
        {
            "recipe": recipe,
            "overrides": list(overrides),
            "steps": result.steps,
            "best_val_loss": result.best_val_loss,
            "final_loss": result.losses[-1] if result.losses else None,
            "switches": read_json_or_empty(out / "switches.json"),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return result.model_dir


def held_out_subjects(recipe: str, overrides: Sequence[str]) -> list[int]:
    """The subjects that train() keeps out of pretraining (its validation split)."""
    from ..registry.recipes import resolve_recipe
    from ..training.trainer import load_data

    loaded = resolve_recipe(recipe, list(overrides))
    from ..components import create

    contract = create(
        "encoder", loaded.recipe.encoder.type, **loaded.recipe.encoder.params
    ).imu_contract
    corpus = load_data(loaded.recipe, contract)
    if loaded.recipe.data.val_fraction <= 0:
        raise ExperimentError(
            f"recipe {recipe}: data.val_fraction is 0, so no subject is held "
            "out of pretraining for an in-domain test"
        )
    _, val_idx = split_by_subject(corpus, loaded.recipe.data.val_fraction, loaded.recipe.train.seed)
    return sorted(int(s) for s in np.unique(corpus.subjects[val_idx]))


# ---------------------------------------------------------------------------- evaluation
@dataclass
class EvalPlan:
    """How every pretrained model is evaluated (the same for all, baselines once per dataset)."""

    datasets: list[str]
    shots: list[int | str] = field(default_factory=lambda: [1, 2, 5, 10])
    seeds: int = 3
    mode: str = "linear"
    protocol: str = "primus"  # reference | primus (EvalSettings.protocol)
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    device: str | None = None
    in_domain: dict[str, list[int]] = field(default_factory=dict)  # dataset -> test subjects
    eval_overrides: dict[str, Any] = field(default_factory=dict)  # extra EvalSettings fields

    def settings(self, dataset: str) -> EvalSettings:
        return EvalSettings(
            dataset=dataset,
            shots=list(self.shots),
            seeds=self.seeds,
            mode=self.mode,
            protocol=self.protocol,
            device=self.device,
            test_subjects=self.in_domain.get(dataset),
            **self.eval_overrides,
        )


def evaluate_models(
    models: dict[str, Path],
    plan: EvalPlan,
    progress: bool = True,
    windows: dict[str, WindowSet] | None = None,
) -> dict[str, dict[str, Any]]:
    """dataset -> combined eval result (every model + the baselines once) as a dict; a dataset
    in ``windows`` is evaluated on those windows instead of its default preparation."""
    loaded = {name: named(load_model(str(path)), name) for name, path in models.items()}
    first = next(iter(loaded.values()))
    results: dict[str, dict[str, Any]] = {}
    for dataset in plan.datasets:
        settings = plan.settings(dataset)
        ws = (windows or {}).get(dataset) or prepare_dataset(
            dataset, first.encoder.imu_contract, progress
        )
        combined = None
        for i, model in enumerate(loaded.values()):
            check_contract(model, first)
            part = evaluate(
                model,
                settings,
                baselines=plan.baselines if i == 0 else (),
                progress=progress,
                windows=ws,
            ).to_dict()
            combined = part if combined is None else merge_results(combined, part)
        results[dataset] = order_baselines_last(combined)
    return results


def named(model: LoadedModel, name: str) -> LoadedModel:
    model.name = name
    return model


def check_contract(model: LoadedModel, first: LoadedModel) -> None:
    if model.encoder.imu_contract != first.encoder.imu_contract:
        raise ExperimentError(
            f"{model.name} and {first.name} expect different IMU windows; evaluate them separately"
        )


def merge_results(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    out["models"] = a["models"] + b["models"]
    out["runs"] = a["runs"] + b["runs"]
    out["seconds"] = round(a["seconds"] + b["seconds"], 2)
    out["summary"] = summarise(out["runs"])
    return out


def order_baselines_last(result: dict[str, Any]) -> dict[str, Any]:
    models = [m for m in result["models"] if m["kind"] == "model"]
    models += [m for m in result["models"] if m["kind"] != "model"]
    rank = {m["name"]: i for i, m in enumerate(models)}
    result["models"] = models
    result["summary"] = sorted(result["summary"], key=lambda r: rank.get(r["model"], 99))
    return result


# ---------------------------------------------------------------------------- benchmark
@dataclass
class BenchmarkSettings:
    recipes: list[str] = field(default_factory=lambda: list(BENCHMARK_RECIPES))
    steps: int | None = 300
    overrides: list[str] = field(default_factory=list)
    in_domain: str = "hapt"
    cross_domain: list[str] = field(default_factory=lambda: list(CROSS_DOMAIN))
    held_out_fraction: float = 0.3  # subjects kept out of pretraining for the in-domain test
    plan: EvalPlan = field(default_factory=lambda: EvalPlan(datasets=[]))


def run_benchmark(s: BenchmarkSettings, out: Path, progress: bool = True) -> dict[str, Any]:
    """Pretrain every recipe, evaluate each on every dataset; writes benchmark.{json,md,png}."""
    if not s.recipes:
        raise ExperimentError("no recipes to benchmark")
    out = Path(out)
    started = time.perf_counter()
    overrides = [f"data.val_fraction={s.held_out_fraction}", *s.overrides]
    models = {
        r: pretrain(r, overrides, out / "runs" / r, s.steps, s.plan.device, progress)
        for r in s.recipes
    }
    plan = s.plan
    plan.datasets = [*s.cross_domain, *([s.in_domain] if s.in_domain else [])]
    if s.in_domain:
        held = held_out_subjects(s.recipes[0], overrides)
        plan.in_domain = {s.in_domain: held}
    results = evaluate_models(models, plan, progress)
    report = {
        "format": "primus-benchmark/1",
        "settings": asdict(s),
        "results": results,
        "pretraining": {r: read_marker(out / "runs" / r) for r in s.recipes},
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_benchmark(report, out)
    return report


def read_marker(run: Path) -> dict[str, Any]:
    return read_json_or_empty(run / DONE)


def read_json_or_empty(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def benchmark_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    env = report["environment"]
    lines = [
        f"# Few-shot benchmark: pretrained on HAPT ({s['steps']} steps per recipe), "
        f"{s['plan']['mode']} probe ({s['plan'].get('protocol', 'primus')} protocol), "
        f"accuracy mean ± std over {s['plan']['seeds']} seeds",
        "",
        f"Machine: {machine_line(env)}; {report['seconds']:.0f} s in all.",
        "",
    ]
    for dataset, result in report["results"].items():
        held = result["settings"].get("test_subjects")
        where = (
            f"in-domain, test subjects {held} (held out of pretraining)"
            if held
            else "cross-domain, test subjects drawn per seed"
        )
        lines += [
            f"## {dataset} ({where}; {len(result['classes'])} classes, chance "
            f"{1 / len(result['classes']):.3f})",
            "",
            markdown_table(result["summary"], "accuracy"),
            "",
        ]
    return "\n".join(lines)


def machine_line(env: dict[str, Any]) -> str:
    device = env.get("gpu") or f"CPU ({env.get('processor')}, {env.get('threads')} threads)"
    return f"{device}, {env.get('platform')}, torch {env.get('torch')}"


def write_benchmark(report: dict[str, Any], out: Path) -> None:
    write_json(out / "benchmark.json", report)
    write_text(out / "benchmark.md", benchmark_markdown(report))
    plot_benchmark(report, out / "benchmark.png")


def plot_benchmark(report: dict[str, Any], path: Path) -> Path:
    """One panel per dataset: accuracy against shots, one line per model (± std band)."""
    from .reports import _pyplot

    plt = _pyplot()
    results = report["results"]
    fig, axes = plt.subplots(
        1, len(results), figsize=(5.2 * len(results), 4.0), dpi=110, squeeze=False
    )
    for ax, (dataset, result) in zip(axes[0], results.items(), strict=True):
        draw_shot_curves(ax, result)
        ax.set_title(dataset, fontsize=10)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, Path(path))


def draw_shot_curves(ax, result: dict[str, Any], metric: str = "accuracy") -> None:
    series: dict[str, list[tuple[float, float, float]]] = {}
    numeric = [r["shots"] for r in result["summary"] if isinstance(r["shots"], int) and r["shots"]]
    all_x = 2 * max(numeric) if numeric else 1
    for row in result["summary"]:
        if row["shots"] == 0:
            continue
        x = all_x if row["shots"] == "all" else row["shots"]
        series.setdefault(row["model"], []).append((x, row[f"{metric}_mean"], row[f"{metric}_std"]))
    for name, pts in series.items():
        pts.sort()
        xs, mean, std = (np.array(v) for v in zip(*pts, strict=True))
        style = (
            "--"
            if any(m["name"] == name and m["kind"] != "model" for m in result["models"])
            else "-"
        )
        (line,) = ax.plot(xs, mean, style, marker="o", label=name)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.12, color=line.get_color())
    ax.axhline(1 / len(result["classes"]), color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ticks = sorted({x for pts in series.values() for x, _, _ in pts})
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [
            "all" if t == all_x and "all" in [r["shots"] for r in result["summary"]] else f"{t:g}"
            for t in ticks
        ]
    )
    ax.set_xlabel("labelled windows per class")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------- diversity vs size
@dataclass
class DiversitySettings:
    source: str = "hapt"
    recipe: str = "primus-hapt"
    diversities: list[int] = field(default_factory=lambda: [2, 4, 8])
    sizes: list[int] = field(default_factory=lambda: [128, 256, 512])
    steps: int = 60
    repeats: int = 1  # pretraining runs per corpus (train.seed and the class order vary)
    overrides: list[str] = field(default_factory=list)
    bootstrap: int = 2000
    order_seed: int = 0
    in_domain: bool = True  # also test on the source's subjects held out of pretraining
    spread: bool = True  # semantic spread of each corpus's narrations (docs/diversity.md)
    plan: EvalPlan = field(
        default_factory=lambda: EvalPlan(
            datasets=list(CROSS_DOMAIN), shots=[1, 5, 10], baselines=["untrained"]
        )
    )

    def check(self) -> None:
        if not self.diversities or not self.sizes:
            raise ExperimentError("--diversities and --sizes need at least one value each")
        if len(set(self.diversities)) < 2 and len(set(self.sizes)) < 2:
            raise ExperimentError("vary at least one of --diversities and --sizes")
        if min(self.diversities) < 1 or min(self.sizes) < 1 or self.repeats < 1:
            raise ExperimentError("diversities, sizes and --repeats must be positive")


def class_order(ws: WindowSet, seed: int) -> list[str]:
    """Classes in the order corpora add them: a seeded shuffle of the frequent classes (at
    least the median count), then a seeded shuffle of the rest - so small corpora are fillable."""
    counts = np.bincount(ws.labels[ws.labels >= 0], minlength=len(ws.class_names))
    rng = np.random.default_rng(seed)
    present = [c for c in range(len(ws.class_names)) if counts[c] > 0]
    median = float(np.median(counts[present])) if present else 0.0
    frequent = [c for c in present if counts[c] >= median]
    rare = [c for c in present if counts[c] < median]
    order = list(rng.permutation(frequent)) + list(rng.permutation(rare))
    return [ws.class_names[int(c)] for c in order]


@dataclass
class Corpus:
    diversity: int
    size: int
    repeat: int
    classes: list[str]
    available: int

    @property
    def key(self) -> str:
        return f"d{self.diversity}-n{self.size}-r{self.repeat}"

    def overrides(self) -> list[str]:
        return [
            f"data.include_classes={json.dumps(self.classes)}",
            f"data.max_windows={self.size}",
            f"train.seed={1234 + self.repeat}",
        ]


def build_corpora(ws: WindowSet, s: DiversitySettings) -> tuple[list[Corpus], list[str]]:
    """Every feasible (diversity, size, repeat) corpus, and notes on the infeasible ones."""
    names = ws.class_names
    counts = np.bincount(ws.labels[ws.labels >= 0], minlength=len(names))
    if max(s.diversities) > int((counts > 0).sum()):
        raise ExperimentError(
            f"{s.source} has {int((counts > 0).sum())} labelled activities; "
            f"--diversities asks for {max(s.diversities)}"
        )
    corpora, notes = [], []
    for r in range(s.repeats):
        order = class_order(ws, s.order_seed + r)
        for d in sorted(set(s.diversities)):
            classes = order[:d]
            available = int(sum(counts[names.index(c)] for c in classes))
            for n in sorted(set(s.sizes)):
                if n > available:
                    notes.append(
                        f"skipped d={d}, n={n} (repeat {r}): the {d} activities "
                        f"{classes} have only {available} windows"
                    )
                    continue
                corpora.append(Corpus(d, n, r, classes, available))
    if not corpora:
        raise ExperimentError("no corpus of the grid can be built: " + "; ".join(notes))
    return corpora, notes


def run_diversity_vs_size(s: DiversitySettings, out: Path, progress: bool = True) -> dict[str, Any]:
    """Pretrain and evaluate every corpus of the grid (each finished corpus is kept in
    OUT/runs/<corpus>/ and reused by a rerun), fit the verdict, write the reports."""
    from ..registry.recipes import resolve_recipe

    s.check()
    out = Path(out)
    started = time.perf_counter()
    base = resolve_recipe(s.recipe, []).recipe
    if [r.type for r in base.data.pretrain] != [s.source]:
        source_override = [f"data.pretrain=[{{type: {s.source}}}]"]
    else:
        source_override = []
    shared = [*source_override, *s.overrides]
    recipe = resolve_recipe(s.recipe, shared).recipe
    source_ws = labelled(load_windows(recipe.data.pretrain[0], source_contract(s.recipe, shared)))
    corpora, notes = build_corpora(source_ws, s)
    per_model: dict[str, dict[str, Any]] = {}
    measures: dict[str, dict[str, Any]] = {}
    for i, corpus in enumerate(corpora):
        overrides = [*shared, *corpus.overrides()]
        run = out / "runs" / corpus.key
        model = pretrain(s.recipe, overrides, run, s.steps, s.plan.device, progress)
        plan = corpus_plan(s, overrides, baselines=i == 0, in_domain=holds_out(recipe))
        per_model[corpus.key] = cached_evaluation(
            corpus.key, model, plan, run / "eval.json", progress, {s.source: source_ws}
        )
        measures[corpus.key] = corpus_measures(s, corpus, overrides, run / "measures.json")
        log.info("corpus %d/%d done: %s", i + 1, len(corpora), corpus.key)
    results = combine_results(list(per_model.values()))
    cells = cell_scores(results, corpora, s.plan.datasets, s.source if s.in_domain else None)
    for c in cells:
        c["measures"] = measures.get(c["model"], {})
    report = {
        "format": "primus-diversity-vs-size/2",
        "command": "primus " + " ".join(sys.argv[1:]),
        "settings": asdict(s),
        "corpora": [asdict(c) | {"key": c.key, "measures": measures[c.key]} for c in corpora],
        "notes": notes,
        "cells": cells,
        "verdict": fit_verdict(cells, s.bootstrap),
        "analysis": analyse(cells, s),
        "results": results,
        "pretraining": {c.key: read_marker(out / "runs" / c.key) for c in corpora},
        "loss_curves": {c.key: loss_curve(out / "runs" / c.key) for c in corpora},
        "model_steps": {c.key: model_step(out / "runs" / c.key) for c in corpora},
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
        "pretraining_seconds": round(
            sum(read_marker(out / "runs" / c.key).get("seconds", 0.0) for c in corpora), 1
        ),
    }
    write_diversity(report, out)
    return report


def holds_out(recipe) -> bool:
    """Whether pretraining keeps whole subjects of the source out (its in-domain test set)."""
    return recipe.data.validation is None and recipe.data.val_fraction > 0


def corpus_plan(
    s: DiversitySettings, overrides: list[str], baselines: bool, in_domain: bool
) -> EvalPlan:
    """The evaluation plan of one corpus: the cross-domain datasets and, in-domain, the source
    on the subjects that corpus's pretraining held out; the reference baselines with the first
    corpus only (they do not depend on the corpus)."""
    plan = EvalPlan(**{**asdict(s.plan), "in_domain": {}})
    if not baselines:
        plan.baselines = []
    if s.in_domain and in_domain:
        plan.datasets = [*plan.datasets, s.source]
        plan.in_domain = {s.source: held_out_subjects(s.recipe, overrides)}
    return plan


def cached_evaluation(
    name: str,
    model: Path,
    plan: EvalPlan,
    path: Path,
    progress: bool,
    windows: dict[str, WindowSet] | None = None,
) -> dict[str, Any]:
    """dataset -> eval result of one model (and the plan's baselines), reused from ``path``
    when it was written for the same plan."""
    key = json.loads(json.dumps(asdict(plan), default=str))
    cached = read_json_or_empty(path)
    if cached.get("plan") == key:
        log.info("reusing the evaluation in %s", path)
        return cached["results"]
    results = evaluate_models({name: model}, plan, progress, windows)
    write_json(path, {"plan": key, "results": results})
    return results


def combine_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    combined: dict[str, Any] = {}
    for part in parts:
        for dataset, result in part.items():
            combined[dataset] = (
                result if dataset not in combined else merge_results(combined[dataset], result)
            )
    return {d: order_baselines_last(r) for d, r in combined.items()}


def corpus_measures(
    s: DiversitySettings, corpus: Corpus, overrides: list[str], path: Path
) -> dict[str, Any]:
    """The corpus's diversity by both definitions, kept in ``path`` once computed."""
    cached = read_json_or_empty(path)
    if cached:
        return cached
    measures: dict[str, Any] = {"activities": corpus.diversity, "windows": corpus.size}
    if s.spread:
        from .diversity import corpus_spread

        measures.update(corpus_spread(s.recipe, overrides))
    write_json(path, measures)
    return measures


def analyse(cells: list[dict[str, Any]], s: DiversitySettings) -> dict[str, Any]:
    """The mixed-effects fit and the power of both outcomes, and which diversity measure
    predicts cross-domain transfer best."""
    from .diversity import compare_measures, mixed_effects, power_summary

    out: dict[str, Any] = {}
    for outcome, key in (("cross_domain", "seed_scores"), ("in_domain", "in_domain_scores")):
        if not any(c.get(key) for c in cells if c["diversity"] > 0):
            continue
        out[outcome] = {
            "bootstrap": fit_verdict(cells, s.bootstrap, key=key) if key != "seed_scores" else None,
            "mixed_effects": mixed_effects(cells, key),
            "power": power_summary(cells, key),
        }
    names = ["activities", "mean_cosine_distance", "effective_clusters"]
    present = [n for n in names if all(n in c.get("measures", {}) for c in cells if c["diversity"])]
    out["measures"] = {
        outcome: compare_measures(cells, present, key, s.bootstrap)
        for outcome, key in (("cross_domain", "seed_scores"), ("in_domain", "in_domain_scores"))
        if any(c.get(key) for c in cells if c["diversity"] > 0)
    }
    return out


def source_contract(recipe_name: str, overrides: list[str]):
    from ..components import create
    from ..registry.recipes import resolve_recipe

    recipe = resolve_recipe(recipe_name, overrides).recipe
    return create("encoder", recipe.encoder.type, **recipe.encoder.params).imu_contract


def cell_scores(
    results: dict[str, dict[str, Any]],
    corpora: list[Corpus],
    cross_domain: Sequence[str] | None = None,
    in_domain: str | None = None,
) -> list[dict[str, Any]]:
    """Per corpus and eval seed: the accuracy on each dataset averaged over shots; its mean over
    the cross-domain datasets (``seed_scores``, the main outcome) and the in-domain one
    (``in_domain_scores``); plus the reference rows (baselines) under diversity 0."""
    by_key = {c.key: c for c in corpora}
    cross = [d for d in (cross_domain or results) if d != in_domain]
    per: dict[str, dict[str, dict[int, list[float]]]] = {}
    for dataset, result in results.items():
        for run in result["runs"]:
            per.setdefault(run["model"], {}).setdefault(dataset, {}).setdefault(
                int(run["seed"]), []
            ).append(run["accuracy"])
    cells = []
    for name, datasets in per.items():
        corpus = by_key.get(name)
        by_dataset = {
            d: {seed: float(np.mean(v)) for seed, v in sorted(seeds.items())}
            for d, seeds in datasets.items()
        }
        seeds = sorted({seed for d in cross if d in by_dataset for seed in by_dataset[d]})
        scores = {
            seed: float(
                np.mean([by_dataset[d][seed] for d in cross if seed in by_dataset.get(d, {})])
            )
            for seed in seeds
        }
        mean, std = mean_std(list(scores.values())) if scores else (float("nan"), 0.0)
        cells.append(
            {
                "model": name,
                "diversity": corpus.diversity if corpus else 0,
                "size": corpus.size if corpus else 0,
                "repeat": corpus.repeat if corpus else 0,
                "seed_scores": scores,
                "in_domain_scores": by_dataset.get(in_domain, {}) if in_domain else {},
                "dataset_scores": by_dataset,
                "accuracy_mean": mean,
                "accuracy_std": std,
            }
        )
    return cells


def fit_verdict(
    cells: list[dict[str, Any]], bootstrap: int, seed: int = 0, key: str = "seed_scores"
) -> dict[str, Any]:
    """OLS of accuracy on log2(diversity) and log2(size) over the grid; percentile bootstrap
    (resampling eval seeds and pretraining repeats) of both slopes and their difference."""
    grid = [c for c in cells if c["diversity"] > 0 and c.get(key)]
    seeds = sorted({s for c in grid for s in c[key]})
    repeats = sorted({c["repeat"] for c in grid})
    points = sorted({(c["diversity"], c["size"]) for c in grid})
    score = {
        (c["diversity"], c["size"], c["repeat"], s): v for c in grid for s, v in c[key].items()
    }
    design = np.array([[1.0, math.log2(d), math.log2(n)] for d, n in points])
    rank = np.linalg.matrix_rank(design) if len(points) else 0

    def slopes(seed_pick: Sequence[int], repeat_pick: Sequence[int]) -> np.ndarray:
        y = np.array(
            [
                np.mean(
                    [
                        score[(d, n, r, s)]
                        for r in repeat_pick
                        for s in seed_pick
                        if (d, n, r, s) in score
                    ]
                )
                for d, n in points
            ]
        )
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return coef

    out: dict[str, Any] = {
        "outcome": "in-domain" if key == "in_domain_scores" else "cross-domain",
        "points": [list(p) for p in points],
        "seeds": len(seeds),
        "repeats": len(repeats),
        "bootstrap": bootstrap,
    }
    vary_d = len({d for d, _ in points}) > 1
    vary_n = len({n for _, n in points}) > 1
    if rank < 3 or not (vary_d and vary_n):
        out["text"] = (
            "The grid does not vary both diversity and size independently, so the "
            "two effects cannot be separated."
        )
        return out
    point = slopes(seeds, repeats)
    rng = np.random.default_rng(seed)
    draws = np.array(
        [
            slopes(rng.choice(seeds, len(seeds)), rng.choice(repeats, len(repeats)))
            for _ in range(bootstrap)
        ]
    )
    names = {"per_doubling_diversity": 1, "per_doubling_size": 2}
    for key, j in names.items():
        out[key] = interval(point[j], draws[:, j])
    out["difference"] = interval(point[1] - point[2], draws[:, 1] - draws[:, 2])
    out["text"] = verdict_text(out)
    return out


def interval(estimate: float, draws: np.ndarray) -> dict[str, float]:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"estimate": float(estimate), "low": float(lo), "high": float(hi)}


def verdict_text(v: dict[str, Any]) -> str:
    def fmt(x: dict[str, float]) -> str:
        return f"{100 * x['estimate']:+.1f} points [95% CI {100 * x['low']:+.1f}, {100 * x['high']:+.1f}]"

    diff = v["difference"]
    samples = v["seeds"] * v["repeats"]
    if samples < MIN_SAMPLES_FOR_CALL:
        call = (
            f"With only {samples} seed/repeat sample(s) the bootstrap interval is not "
            f"reliable, so no call is made (use at least {MIN_SAMPLES_FOR_CALL} seeds)"
        )
    elif diff["low"] > 0:
        call = "More diversity helped more than more windows in this run"
    elif diff["high"] < 0:
        call = "More windows helped more than more diversity in this run"
    else:
        call = "No difference between the two could be detected: the interval includes 0"
    noise = (
        f"The intervals resample the {v['seeds']} evaluation seeds (test subjects and "
        f"few-shot draws)"
    )
    noise += (
        f" and the {v['repeats']} pretraining repeats"
        if v["repeats"] > 1
        else "; with a single pretraining run per corpus they do not cover pretraining noise "
        "(use --repeats 3 or more before trusting a difference)"
    )
    return (
        f"Doubling the number of activities at a fixed corpus size changed "
        f"{v.get('outcome', 'cross-domain')} few-shot accuracy by {fmt(v['per_doubling_diversity'])}; doubling the number of "
        f"windows at a fixed diversity by {fmt(v['per_doubling_size'])}. Difference "
        f"(diversity - size): {fmt(diff)}. {call}. {noise}."
    )


def diversity_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    plan = s["plan"]
    refs = [c for c in report["cells"] if c["diversity"] == 0]
    table = markdown_table(
        pooled_cells(report["cells"]), col_label=lambda n: f"{n} windows", row_label="diversity"
    )
    lines = [
        f"# Diversity vs size: {s['recipe']} on {s['source']}, {s['steps']} steps per corpus",
        "",
        f"Cross-domain {plan['mode']} few-shot accuracy ({plan.get('protocol', 'primus')} "
        "protocol) on "
        f"{', '.join(plan['datasets'])} at {', '.join(map(str, plan['shots']))} shots, "
        f"averaged over datasets and shots; mean ± std over {plan['seeds']} evaluation "
        f"seeds{' and ' + str(s['repeats']) + ' pretraining repeats' if s['repeats'] > 1 else ''}.",
        "",
        f"Command: `{report.get('command', '')}`",
        "",
        f"Machine: {machine_line(report['environment'])}; {report['seconds']:.0f} s for the "
        f"last invocation; pretraining took {report.get('pretraining_seconds', 0):.0f} s in "
        "all (summed over corpora, earlier resumed invocations included).",
        "",
        table,
        "",
    ]
    for ref in refs:
        lines.append(
            f"Reference, {ref['model']}: {ref['accuracy_mean']:.3f} ± {ref['accuracy_std']:.3f}."
        )
    changes = [flatness(c) for c in (report.get("loss_curves") or {}).values()]
    changes = [c for c in changes if c is not None]
    if changes:
        lines += [
            "",
            f"Pretraining loss (diversity_vs_size_loss.png): over the last fifth of the "
            f"{s['steps']} steps it changed by {100 * float(np.median(changes)):+.1f} % (median "
            f"over corpora; range {100 * min(changes):+.1f} to {100 * max(changes):+.1f} %) "
            "against the fifth before.",
        ]
    chosen = model_steps_line(report)
    if chosen:
        lines += ["", chosen]
    lines += ["", "**Verdict.** " + report["verdict"]["text"], ""]
    lines += analysis_markdown(report)
    if report["notes"]:
        lines += ["Notes:", *(f"- {n}" for n in report["notes"]), ""]
    corpora = {tuple(c["classes"]) for c in report["corpora"]}
    lines += [
        "Activities per corpus (nested, in a seeded order):",
        *(f"- {len(c)}: {', '.join(c)}" for c in sorted(corpora, key=len)),
        "",
    ]
    return "\n".join(lines)


def analysis_markdown(report: dict[str, Any]) -> list[str]:
    """The mixed-effects fit, the power, the in-domain outcome and the diversity measures."""
    analysis = report.get("analysis") or {}
    lines: list[str] = []
    for outcome, label in (("cross_domain", "Cross-domain"), ("in_domain", "In-domain")):
        a = analysis.get(outcome)
        if not a:
            continue
        if outcome == "in_domain":
            lines += [
                f"In-domain ({report['settings']['source']}, subjects held out of each "
                "pretraining run, every activity):",
                "",
                markdown_table(
                    pooled_cells(report["cells"], "in_domain_scores"),
                    col_label=lambda n: f"{n} windows",
                    row_label="diversity",
                ),
                "",
            ]
            for ref in report["cells"]:
                if ref["diversity"] == 0 and ref.get("in_domain_scores"):
                    mean, std = mean_std(list(ref["in_domain_scores"].values()))
                    lines += [f"Reference, {ref['model']}: {mean:.3f} ± {std:.3f}.", ""]
            if a.get("bootstrap") and "text" in a["bootstrap"]:
                lines += ["**In-domain verdict.** " + a["bootstrap"]["text"], ""]
        me = a.get("mixed_effects", {})
        if "difference" in me:
            lines.append(
                f"{label} mixed-effects fit ({me['model']}, REML): diversity "
                f"{points(me['per_doubling_diversity'])}, size {points(me['per_doubling_size'])}, "
                f"difference {points(me['difference'])} (p = {me['difference']['p']:.3f})."
            )
        pw = a.get("power", {})
        if "sd_per_sample" in pw:
            lines.append(
                f"{label} power: one seed x repeat sample measures the difference with a spread "
                f"of {100 * pw['sd_per_sample']:.1f} points; these {pw['samples']} samples had "
                f"{100 * pw['power_1_point']:.0f} % power to detect a 1-point difference; 80 % "
                f"needs {pw['samples_for_1_point']} samples ({pw['repeats_for_1_point']} "
                "repeats at this many seeds)."
            )
        lines.append("")
    measures = [c for c in report["corpora"] if c.get("measures")]
    if measures and "mean_cosine_distance" in measures[0]["measures"]:
        lines += [
            "Diversity of each corpus, both definitions (narrations embedded by "
            f"{measures[0]['measures'].get('teacher', 'the text teacher')}):",
            "",
            "| corpus | activities | distinct narrations | mean cosine distance | "
            "effective clusters |",
            "|---|---|---|---|---|",
            *(
                f"| {c['key']} | {m['activities']} | {m.get('distinct_narrations', '-')} | "
                f"{m.get('mean_cosine_distance', float('nan')):.3f} | "
                f"{m.get('effective_clusters', float('nan')):.2f} |"
                for c in measures
                for m in [c["measures"]]
            ),
            "",
        ]
    for outcome, cmp in (analysis.get("measures") or {}).items():
        if not cmp.get("measures"):
            continue
        rows = [
            f"- {name}: R² {v['r2']:.3f}, leave-one-repeat-out RMSE "
            + (f"{100 * v['cv_rmse']:.2f} points" if v["cv_rmse"] is not None else "-")
            + f", {100 * v['slope_per_doubling']:+.1f} points per doubling"
            + "".join(
                f"; minus the RMSE with {k[len('rmse_vs_') :]}: {points(d)}"
                for k, d in v.items()
                if k.startswith("rmse_vs_")
            )
            for name, v in cmp["measures"].items()
        ]
        lines += [
            f"Which diversity measure predicts {outcome.replace('_', '-')} accuracy "
            "(accuracy ~ log2 measure + log2 size over the corpora; best: "
            f"**{cmp.get('best', '-')}**):",
            *rows,
            "",
        ]
    return lines


def points(x: dict[str, float]) -> str:
    return (
        f"{100 * x['estimate']:+.1f} points [95% CI {100 * x['low']:+.1f}, {100 * x['high']:+.1f}]"
    )


def pooled_cells(cells: list[dict[str, Any]], key: str = "seed_scores") -> list[dict[str, Any]]:
    """Per (diversity, size): mean ± std over every (pretraining repeat, eval seed) score."""
    groups: dict[tuple[int, int], list[float]] = {}
    for c in cells:
        if c["diversity"] > 0 and c.get(key):
            groups.setdefault((c["diversity"], c["size"]), []).extend(c[key].values())
    rows = []
    for (d, n), scores in sorted(groups.items()):
        mean, std = mean_std(scores)
        rows.append(
            {
                "model": f"{d} activities",
                "shots": n,
                "diversity": d,
                "size": n,
                "accuracy_mean": mean,
                "accuracy_std": std,
                "n": len(scores),
            }
        )
    return rows


def write_diversity(report: dict[str, Any], out: Path) -> None:
    write_json(out / "diversity_vs_size.json", report)
    write_text(out / "diversity_vs_size.md", diversity_markdown(report))
    plot_diversity(report, out / "diversity_vs_size.png")
    plot_loss_curves(report["loss_curves"], out / "diversity_vs_size_loss.png")


def loss_curve(run: Path) -> list[tuple[int, float]]:
    """(step, training loss) of one pretraining run, from its metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss") is not None]


def model_step(run: Path) -> int | None:
    """The step at which the evaluated model was written: the trainer keeps the checkpoint with
    the lowest validation loss (the lowest training loss at an epoch end without validation)."""
    path = run / "model" / "config.json"
    if not path.is_file():
        return None
    step = (json.loads(path.read_text()).get("validation") or {}).get("step")
    return int(step) if step is not None else None


def model_steps_line(report: dict[str, Any]) -> str | None:
    """Markdown: at which steps the evaluated models were written, per corpus size."""
    steps = report.get("model_steps") or {}
    sizes: dict[int, list[int]] = {}
    for corpus in report["corpora"]:
        step = steps.get(corpus["key"])
        if step is not None:
            sizes.setdefault(corpus["size"], []).append(step)
    if not sizes:
        return None
    parts = [
        f"{size} windows: median step {int(np.median(v))} (range {min(v)}-{max(v)})"
        for size, v in sorted(sizes.items())
    ]
    return (
        "The model evaluated for each corpus is its best checkpoint (lowest validation loss on "
        "held-out subjects, or lowest training loss at an epoch end when fewer validation windows "
        f"than one batch are held out), written at: {'; '.join(parts)}, of "
        f"{report['settings']['steps']} steps."
    )


def flatness(curve: list[tuple[int, float]]) -> float | None:
    """Relative change of the loss between the second-to-last and the last fifth of training
    (negative: still falling). None for a curve too short to tell."""
    if len(curve) < 5:
        return None
    losses = np.array([v for _, v in curve])
    fifth = max(1, len(losses) // 5)
    before, last = losses[-2 * fifth : -fifth].mean(), losses[-fifth:].mean()
    return float((last - before) / abs(before)) if before else None


def corpus_size_label(key: str) -> str:
    """'d4-n800-r0' -> '800 windows'."""
    return f"{key.split('-')[1][1:]} windows"


def plot_loss_curves(
    curves: dict[str, list[list[float]]],
    path: Path,
    group=corpus_size_label,
    title: str = "pretraining loss of every corpus",
) -> Path:
    """Training loss against step, one thin line per run, one colour per ``group(key)``."""
    from .reports import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    groups = list(dict.fromkeys(group(key) for key in curves))
    cmap = plt.get_cmap("viridis")
    colours = {g: cmap(i / max(1, len(groups) - 1) * 0.85) for i, g in enumerate(groups)}
    alpha = 0.35 if len(curves) > len(groups) else 0.9
    for key, curve in curves.items():
        if curve:
            steps, losses = zip(*curve, strict=True)
            ax.plot(steps, losses, color=colours[group(key)], alpha=alpha, linewidth=0.8)
    for g, colour in colours.items():
        ax.plot([], [], color=colour, label=g)
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("training loss (SS + MM + NN)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def plot_diversity(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against corpus size, one line per diversity (± std over seeds and repeats)."""
    series: dict[str, list[tuple[Any, float, float]]] = {}
    for row in pooled_cells(report["cells"]):
        series.setdefault(row["model"], []).append(
            (row["size"], row["accuracy_mean"], row["accuracy_std"])
        )
    s = report["settings"]
    refs = {c["model"]: c["accuracy_mean"] for c in report["cells"] if c["diversity"] == 0}
    return plot_lines(
        series,
        path,
        xlabel="pretraining windows",
        references=refs,
        ylabel="cross-domain few-shot accuracy",
        title=f"{s['recipe']} on {s['source']}, {s['steps']} steps; eval "
        f"{', '.join(s['plan']['datasets'])}",
    )
