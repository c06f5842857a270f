"""``primus bench``: training-step, inference and data-loading throughput, side by side in one
run (the measurements live in ``primus_core.training.bench``)."""

from __future__ import annotations

import json

import click

from .params import DEVICE, POSITIVE_FLOAT


@click.command()
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option(
    "--seconds", type=POSITIVE_FLOAT, default=3.0, show_default=True, help="Time per measurement."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench(device: str, seconds: float, as_json: bool) -> None:
    """Throughput of the full PRIMUS training step (SS + MM + NN, cached teachers) at batch 16
    and 256, of inference at batch 256 and of data loading, with peak memory and the ratio of the
    step to the encoder's compute bound on this device."""
    import torch

    from ..components import create
    from ..device import resolve_device
    from ..training.bench import (
        EGOEXO4D_TRAIN_WINDOWS,
        check_targets,
        matmul_gflops,
        run_one,
    )

    dev = resolve_device(device)
    macs = create("encoder", "stacked-rnn").multiply_adds_per_window()
    gflops = matmul_gflops(dev)
    # a training step runs 2 views, forward + backward ~ 3x the forward multiply-adds
    ceiling = gflops * 1e9 / (2 * macs * 2 * 3)
    rows = []
    plan = [("step", 16), ("step", 256), ("inference", 256), ("loading", 256)]
    if dev.type == "cuda":  # a GPU step is launch-bound at small batches: show a large one too
        plan.insert(2, ("step", 2048))
    for kind, batch in plan:
        click.echo(f"measuring {kind} at batch {batch} ...", err=True)
        result = run_one(kind, batch, str(dev), seconds)
        result.update({"measure": kind, "batch": batch})
        if kind == "step":
            result["of_compute_bound"] = result["windows_per_s"] / ceiling
        rows.append(result)
    best_step = max(r["windows_per_s"] for r in rows if r["measure"] == "step")
    summary = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "egoexo4d_epoch_s": EGOEXO4D_TRAIN_WINDOWS / best_step,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "matmul_gflops": gflops,
        "macs_per_window": macs,
        "step_ceiling_windows_per_s": ceiling,
        "rows": rows,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    where = summary["gpu"] or f"{summary['threads']} threads"
    click.echo(
        f"device {dev} ({where}), matmul "
        f"{gflops:.0f} GFLOP/s, {macs / 1e6:.1f} M multiply-adds/window, step ceiling "
        f"{ceiling:,.0f} windows/s"
    )
    click.echo(
        f"{'measure':<10} {'batch':>5} {'windows/s':>11} {'of bound':>9} {'peak MiB':>9}"
        f" {'(imports)':>9}" + ("  GPU util" if dev.type == "cuda" else "")
    )
    for r in rows:
        bound = f"{r['of_compute_bound']:.0%}" if "of_compute_bound" in r else "-"
        line = (
            f"{r['measure']:<10} {r['batch']:>5} {r['windows_per_s']:>11,.0f} {bound:>9} "
            f"{r['peak_mib']:>9,.0f} {r['baseline_mib']:>9,.0f}"
        )
        if dev.type == "cuda":
            line += f"  {r.get('gpu_util_pct')}"
        click.echo(line)
    click.echo(
        f"an EgoExo4D epoch ({EGOEXO4D_TRAIN_WINDOWS:,} windows) at the best step rate: "
        f"{summary['egoexo4d_epoch_s']:.1f} s"
    )
    for target, met in check_targets(dev, rows, summary):
        click.echo(f"target {'met' if met else 'MISSED'}: {target}")
