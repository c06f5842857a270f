"""``primus bench``: training-step, inference and data-loading throughput, side by side in one
run (the measurements live in ``primus_core.training.bench``)."""

from __future__ import annotations

import json

import click

from .params import DEVICE, POSITIVE_FLOAT


def bench_plan(device_type: str, quality: bool) -> list[tuple[str, int, str]]:
    """(measure, batch, variant) rows, in the order they run."""
    plan = [("step", 16, "eager"), ("step", 256, "eager")]
    if device_type == "cuda":  # launch-bound at small batches: the captured step, and a big batch
        plan += [("step", 16, "graph"), ("step", 256, "graph"), ("step", 2048, "eager")]
    dtypes = ["fp32", "bf16"] + (["int8"] if device_type == "cpu" else [])
    plan += [("inference", 256, dtype) for dtype in dtypes]
    plan.append(("loading", 256, ""))
    if quality:
        plan += [("quality", 256, dtype) for dtype in dtypes if dtype != "fp32"]
    return plan


@click.command()
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option(
    "--seconds", type=POSITIVE_FLOAT, default=3.0, show_default=True, help="Time per measurement."
)
@click.option(
    "--quality/--no-quality",
    default=True,
    show_default=True,
    help="Measure the cost of bf16/int8 inference (cosine distance, 5-shot accuracy change).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--markdown", is_flag=True, help="Also print the README speed table's header and this row."
)
def bench(device: str, seconds: float, quality: bool, as_json: bool, markdown: bool) -> None:
    """Throughput of the full PRIMUS training step (SS + MM + NN, cached teachers) at batch 16
    and 256 with its profile, of inference at batch 256 in fp32, bf16 and int8 (with their cost
    in cosine distance and 5-shot accuracy), and of data loading; peak memory, the ratio to the
    encoder's compute bound on this device, and every target as met or missed."""
    import torch

    from ..components import create
    from ..device import resolve_device
    from ..errors import PrimusError
    from ..training.bench import (
        EGOEXO4D_TRAIN_WINDOWS,
        ceilings,
        check_targets,
        matmul_gflops,
        run_one,
    )

    dev = resolve_device(device)
    macs = create("encoder", "stacked-rnn").multiply_adds_per_window()
    gflops = matmul_gflops(dev)
    ceiling, inference_ceiling = ceilings(gflops, macs)
    rows = []
    for kind, batch, variant in bench_plan(dev.type, quality):
        click.echo(f"measuring {kind} {variant} at batch {batch} ...".replace("  ", " "), err=True)
        try:
            result = run_one(kind, batch, str(dev), seconds, variant)
        except PrimusError as exc:
            if kind != "quality":  # needs the watch-exercises data and a shipped model
                raise
            click.echo(f"warning: {exc}", err=True)
            result = {"error": str(exc)}
        result.update({"measure": kind, "batch": batch, "variant": variant})
        # the share of the bound measured in the same process, just before the figure
        own_step, own_inference = ceilings(result.get("matmul_gflops", gflops), macs)
        if kind == "step":
            result["ceiling_windows_per_s"] = own_step
        if kind == "inference" and variant == "fp32":
            result["ceiling_windows_per_s"] = own_inference
        if "ceiling_windows_per_s" in result:
            result["of_compute_bound"] = result["windows_per_s"] / result["ceiling_windows_per_s"]
        rows.append(result)
    steps = {(r["batch"], r["variant"]): r["windows_per_s"] for r in rows if r["measure"] == "step"}
    best16 = max(v for (b, _), v in steps.items() if b == 16)
    summary = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "egoexo4d_epoch_s": EGOEXO4D_TRAIN_WINDOWS / max(steps.values()),
        "egoexo4d_epoch_s_batch16": EGOEXO4D_TRAIN_WINDOWS / best16,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "matmul_gflops": gflops,
        "macs_per_window": macs,
        "step_ceiling_windows_per_s": ceiling,
        "inference_ceiling_windows_per_s": inference_ceiling,
        "rows": rows,
    }
    summary["targets"] = [{"target": t, "met": met} for t, met in check_targets(dev, rows, summary)]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(report(summary))
    if markdown:
        click.echo("\n" + MARKDOWN_HEADER + "\n" + markdown_row(summary))


MARKDOWN_HEADER = (
    "| device (what ran `primus bench`) | step, batch 16 | step, batch 256 | share of bound (256) "
    "| peak above imports, step 256 | inference fp32 / bf16 / int8, batch 256 | loading |\n"
    "|---|---|---|---|---|---|---|"
)


def markdown_row(summary: dict) -> str:
    """One row of the README's speed table from a bench summary (``primus bench --json``)."""
    from ..training.bench import speedup

    defaults = {"step": "eager", "inference": "fp32"}  # rows of bench runs before variants
    rows = {
        (r["measure"], r["batch"], r.get("variant") or defaults.get(r["measure"], "")): r
        for r in summary["rows"]
    }

    def rate(key) -> str:
        return f"{rows[key]['windows_per_s']:,.0f}" if key in rows else "-"

    step = rows[("step", 256, "eager")]
    bound = step.get("of_compute_bound")
    graph = rows.get(("step", 16, "graph"))
    device = summary["gpu"] or f"{summary['threads']} CPU threads"
    ratios = [f"{r:.2f}x" for v in ("bf16", "int8") if (r := speedup(rows, v)) is not None]
    inference = " / ".join(rate(("inference", 256, v)) for v in ("fp32", "bf16", "int8"))
    ceiling = step.get("ceiling_windows_per_s", summary["step_ceiling_windows_per_s"])
    share = f"{bound:.0%} of {ceiling:,.0f}" if bound else "-"
    return (
        f"| {device}, {summary['matmul_gflops']:.0f} GFLOP/s matmul "
        f"| {rate(('step', 16, 'eager'))}"
        + (f" (graph: {graph['windows_per_s']:,.0f})" if graph else "")
        + f" | {rate(('step', 256, 'eager'))} | {share} "
        f"| {step['peak_mib'] - step.get('baseline_mib', 0):,.0f} MiB "
        f"| {inference} ({', '.join(ratios) or '-'} of fp32) "
        f"| {rate(('loading', 256, ''))} |"
    )


def bound_samples(row: dict) -> str:
    """The matmul rate a row's share was computed from: the median of the samples taken
    before and during its figure, and their range."""
    if "of_compute_bound" not in row or "matmul_gflops" not in row:
        return "-"
    low, high = row.get("matmul_gflops_range", [row["matmul_gflops"]] * 2)
    return f"{row['matmul_gflops']:.0f} ({low:.0f}-{high:.0f})"


def report(summary: dict) -> str:
    """The human-readable bench report."""
    from ..training.bench import speedup

    gpu = summary["device"].startswith("cuda")
    where = summary["gpu"] or f"{summary['threads']} threads"
    lines = [
        f"device {summary['device']} ({where}), matmul {summary['matmul_gflops']:.0f} GFLOP/s, "
        f"{summary['macs_per_window'] / 1e6:.1f} M multiply-adds/window, step ceiling "
        f"{summary['step_ceiling_windows_per_s']:,.0f} windows/s, inference ceiling "
        f"{summary['inference_ceiling_windows_per_s']:,.0f} windows/s",
        f"{'measure':<10} {'variant':<7} {'batch':>5} {'windows/s':>11} {'of bound':>9} "
        f"{'vs fp32':>7} {'peak MiB':>9} {'(imports)':>9}  bound's GFLOP/s (range)"
        + ("  GPU util" if gpu else ""),
    ]
    rows = [r for r in summary["rows"] if r["measure"] != "quality"]
    keyed = {(r["measure"], r["batch"], r["variant"]): r for r in rows}
    for r in rows:
        bound = f"{r['of_compute_bound']:.0%}" if "of_compute_bound" in r else "-"
        ratio = speedup(keyed, r["variant"]) if r["measure"] == "inference" else None
        ratio = f"{ratio:.2f}x" if ratio is not None else "-"
        line = (
            f"{r['measure']:<10} {r['variant'] or '-':<7} {r['batch']:>5} "
            f"{r['windows_per_s']:>11,.0f} {bound:>9} {ratio:>7} {r['peak_mib']:>9,.0f} "
            f"{r['baseline_mib']:>9,.0f}  {bound_samples(r):<23}"
        )
        if gpu:
            line += f"  {r.get('gpu_util_pct')}"
        lines.append(line.rstrip())
    for r in summary["rows"]:
        if r["measure"] == "quality" and "error" in r:
            lines.append(f"{r['variant']} vs fp32: not measured ({r['error']})")
        elif r["measure"] == "quality":
            lines.append(
                f"{r['variant']} vs fp32 on {r['windows']} watch-exercises windows: cosine "
                f"distance max {r['max_cosine_distance']:.2e}, mean "
                f"{r['mean_cosine_distance']:.2e}; 5-shot accuracy {r['accuracy_5shot']:.4f} "
                f"({r['accuracy_5shot_change']:+.4f} vs fp32 {r['accuracy_5shot_fp32']:.4f})"
            )
    for r in summary["rows"]:
        if "profile" in r:
            parts = ", ".join(f"{k} {v:.0%}" for k, v in r["profile"].items())
            lines.append(f"step profile at batch {r['batch']}: {parts}")
    lines.append(
        f"an EgoExo4D epoch (195,000 windows): {summary['egoexo4d_epoch_s']:.1f} s at the best "
        f"step rate, {summary['egoexo4d_epoch_s_batch16']:.1f} s at batch 16"
    )
    for item in summary["targets"]:
        lines.append(f"target {'met' if item['met'] else 'MISSED'}: {item['target']}")
    return "\n".join(lines)
