"""Evaluation reports: summaries over seeds, markdown tables, PNG plots (matplotlib, Agg) and
atomic writes of JSON / markdown / PNG files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import write_json, write_text

METRICS = ("accuracy", "macro_f1", "mean_class_accuracy")
METRIC_TITLES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "mean_class_accuracy": "mean per-class accuracy",
}


# ---------------------------------------------------------------------------- summaries
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def shots_key(shots: int | str) -> float:
    return float("inf") if shots == "all" else float(shots)


def summarise(
    runs: Sequence[dict[str, Any]], group: Sequence[str] = ("model", "shots")
) -> list[dict[str, Any]]:
    """Mean and std over seeds of every metric, per (model, shots) - in first-seen model order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[g] for g in group), []).append(run)
    order = {key: i for i, key in enumerate(dict.fromkeys(r["model"] for r in runs))}
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(group, key, strict=True))
        row.update(
            {
                "kind": members[0].get("kind", "model"),
                "mode": members[0].get("mode"),
                "n": len(members),
            }
        )
        for metric in (*METRICS, "zeroshot_accuracy"):
            values = [m[metric] for m in members if m.get(metric) is not None]
            if values:
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(values)
        rows.append(row)
    rows.sort(key=lambda r: (order.get(r.get("model"), 0), shots_key(r.get("shots", 0))))
    return rows


# ---------------------------------------------------------------------------- tables
def spread(row: dict[str, Any], metric: str) -> float | None:
    """The std to show next to a mean: none for a single seed (not "± 0.000")."""
    return None if row.get("n") == 1 else row.get(f"{metric}_std")


def cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def markdown_table(
    summary: Sequence[dict[str, Any]],
    metric: str = "accuracy",
    row_key: str = "model",
    col_key: str = "shots",
    col_label: Callable[[Any], str] | None = None,
    row_label: str | None = None,
) -> str:
    """Rows = models, columns = shots, cells = mean ± std over seeds."""
    rows = list(dict.fromkeys(r[row_key] for r in summary))
    cols = sorted(dict.fromkeys(r[col_key] for r in summary), key=shots_key)
    label = col_label or (
        lambda c: "zero-shot" if c == 0 else f"{c}-shot" if c != "all" else "all labels"
    )
    lookup = {(r[row_key], r[col_key]): r for r in summary}
    lines = [
        "| " + " | ".join([row_label or row_key, *(label(c) for c in cols)]) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for name in rows:
        cells = []
        for c in cols:
            r = lookup.get((name, c))
            cells.append(cell(r.get(f"{metric}_mean"), spread(r, metric)) if r else "-")
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def eval_markdown(result: dict[str, Any]) -> str:
    """The markdown report of one ``primus eval`` run (every metric)."""
    s = result["settings"]
    seeds = s["seeds"]
    split = (
        f"fixed: {s['test_subjects']}"
        if s["test_subjects"]
        else f"a fraction {s['test_fraction']} of the subjects, drawn per seed"
    )
    protocol = s.get("protocol", "primus")
    head = (
        f"## {result['dataset']}: {s['mode']} evaluation ({protocol} protocol, "
        f"docs/fidelity.md), mean ± std over {seeds} seed"
        f"{'s' if seeds != 1 else ''}\n\n{result['windows']} labelled windows, "
        f"{result['subjects']} subjects, {len(result['classes'])} classes; test subjects "
        f"held out ({split})."
    )
    parts = [head]
    for metric in METRICS:
        parts.append(f"### {METRIC_TITLES[metric]}\n\n" + markdown_table(result["summary"], metric))
    zs = {
        r["model"]: r
        for r in reversed(result["summary"])
        if r.get("zeroshot_accuracy_mean") is not None
    }  # the same test sets at every k
    if zs:
        lines = [
            f"- {name}: {cell(r['zeroshot_accuracy_mean'], spread(r, 'zeroshot_accuracy'))}"
            for name, r in reversed(zs.items())
        ]
        parts.append(
            "### zero-shot accuracy of the text-initialised head, before training\n\n"
            + "\n".join(lines)
        )
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(
    series: dict[str, list[tuple[Any, float, float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str = "accuracy",
    chance: float | None = None,
    references: dict[str, float] | None = None,
    log_x: bool = True,
) -> Path:
    """One line per series with a mean ± std band; x values may include 'all' (plotted last)."""
    plt = _pyplot()
    numeric = sorted({float(x) for pts in series.values() for x, _, _ in pts if x != "all"})
    top = numeric[-1] if numeric else 1.0
    all_x = top * 2 if top > 0 else 1.0

    def xpos(x):
        return all_x if x == "all" else float(x)

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, points in series.items():
        points = sorted(points, key=lambda p: xpos(p[0]))
        xs = np.array([xpos(p[0]) for p in points])
        mean = np.array([p[1] for p in points])
        std = np.array([p[2] for p in points])
        (line,) = ax.plot(xs, mean, marker="o", label=name)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=line.get_color())
    for name, value in (references or {}).items():
        ax.axhline(value, color="black", linestyle="--", linewidth=1, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
    if log_x and numeric and numeric[0] > 0:
        ax.set_xscale("log", base=2)
    ticks = sorted({xpos(x) for pts in series.values() for x, _, _ in pts})
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [
            "all"
            if t == all_x and any(x == "all" for p in series.values() for x, _, _ in p)
            else f"{t:g}"
            for t in ticks
        ]
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, Path(path))


def plot_eval(result: dict[str, Any], path: Path, metric: str = "accuracy") -> Path:
    """Accuracy against shots, one line per model, band = ± std over seeds."""
    series: dict[str, list[tuple[Any, float, float]]] = {}
    for row in result["summary"]:
        if row["shots"] == 0 or f"{metric}_mean" not in row:
            continue
        series.setdefault(row["model"], []).append(
            (row["shots"], row[f"{metric}_mean"], row[f"{metric}_std"])
        )
    chance = 1.0 / max(1, len(result["classes"]))
    s = result["settings"]
    return plot_lines(
        series,
        path,
        title=f"{result['dataset']}: {s['mode']}, {s['seeds']} seeds (mean ± std)",
        xlabel="labelled windows per class",
        ylabel=METRIC_TITLES[metric],
        chance=chance,
    )


def save_figure(fig, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------- files
def write_eval_report(result: dict[str, Any], out: Path, stem: str = "eval") -> dict[str, Path]:
    """eval.json, eval.md and eval.png in ``out``."""
    out = Path(out)
    return {
        "json": write_json(out / f"{stem}.json", result),
        "markdown": write_text(out / f"{stem}.md", eval_markdown(result)),
        "plot": plot_eval(result, out / f"{stem}.png"),
    }
