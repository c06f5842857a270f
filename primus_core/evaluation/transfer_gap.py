"""Why pretrained encoders trail the classical features cross-domain: one model, one factor at a
time (docs/diversity.md "The gap to the classical baseline").

Each variant changes one thing against the default evaluation (``linear`` probe, ``primus``
protocol, the encoder's default head, the target windows as the adapter converts them):

- ``head=emb|mmcl|ssl``: which representation the probe reads;
- ``protocol=reference``: the reference repository's probe protocol;
- ``input=standardise``: each target channel shifted and scaled to the pretraining corpus's
  per-channel mean and std (units, gravity offset and mounting orientation all move those);
- ``input=centre``: each window minus its own per-channel mean (removes gravity and the static
  orientation from the target windows only);
- ``model=<dir>``: another model, e.g. one pretrained longer with the same recipe;
- two combinations of the above (``head=ssl+input=standardise``, ``model=longer+head=ssl``).

Run: ``python -m primus_core.evaluation.transfer_gap --model zoo/primus-hapt-stackrnn --longer DIR --out
benchmarks`` (writes transfer_gap.json and transfer_gap.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data.windows import WindowSet
from ..paths import write_json, write_text
from .protocol import EvalSettings, environment, evaluate, load_model, prepare_dataset

INPUTS = ("as-is", "standardise", "centre")


def channel_stats(ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every sample of every window: (C,), (C,)."""
    x = ws.imu.astype(np.float64)
    return x.mean(axis=(0, 2)), x.std(axis=(0, 2))


def transform_inputs(ws: WindowSet, how: str, source: WindowSet | None = None) -> WindowSet:
    """The target windows as-is, standardised to ``source``'s channel statistics, or centred."""
    if how == "as-is":
        return ws
    x = ws.imu.astype(np.float64)
    if how == "centre":
        x = x - x.mean(axis=2, keepdims=True)
    elif how == "standardise":
        if source is None:
            raise ValueError("standardise needs the source windows")
        mean, std = channel_stats(ws)
        s_mean, s_std = channel_stats(source)
        x = (x - mean[None, :, None]) / np.maximum(std, 1e-8)[None, :, None]
        x = x * s_std[None, :, None] + s_mean[None, :, None]
    else:
        raise ValueError(f"unknown input transform {how!r}; one of {', '.join(INPUTS)}")
    return replace(ws, imu=x.astype(np.float32))


def input_profile(ws: WindowSet) -> dict[str, float]:
    """What the input normalisation differs in: the mean |acc| (gravity present: about 9.8
    m/s^2), the per-axis acc means (the static orientation) and the acc and gyro spread."""
    acc, gyro = ws.imu[:, :3].astype(np.float64), ws.imu[:, 3:6].astype(np.float64)
    return {
        "acc_norm_mean": float(np.linalg.norm(acc, axis=1).mean()),
        "acc_axis_means": [float(v) for v in acc.mean(axis=(0, 2))],
        "acc_std": float(acc.std(axis=2).mean()),
        "gyro_std": float(gyro.std(axis=2).mean()),
    }


def variants(longer: str | None) -> list[dict[str, str]]:
    out = [{"name": "default"}]
    out += [{"name": f"head={h}", "head": h} for h in ("emb", "mmcl", "ssl")]
    out += [{"name": "protocol=reference", "protocol": "reference"}]
    out += [{"name": f"input={h}", "input": h} for h in INPUTS[1:]]
    out.append({"name": "head=ssl+input=standardise", "head": "ssl", "input": "standardise"})
    if longer:
        out.append({"name": "model=longer", "model": longer})
        out.append({"name": "model=longer+head=ssl", "model": longer, "head": "ssl"})
    return out


def run_gap_study(
    model: str,
    datasets: list[str],
    out: Path,
    longer: str | None = None,
    source: str = "hapt",
    shots: tuple[int, ...] = (1, 5),
    seeds: int = 3,
    min_steps: int = 300,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate every variant on every dataset (the classical baseline on the same windows) and
    write OUT/transfer_gap.{json,md}."""
    started = time.perf_counter()
    base = load_model(model)
    contract = base.encoder.imu_contract
    source_ws = prepare_dataset(source, contract, progress=False)
    profiles = {source: input_profile(source_ws)}
    rows = []
    for dataset in datasets:
        raw = prepare_dataset(dataset, contract, progress=False)
        profiles[dataset] = input_profile(raw)
        for v in variants(longer):
            if only and v["name"] not in only:
                continue
            loaded = load_model(v["model"]) if "model" in v else base
            if "head" in v and v["head"] not in loaded.encoder.output_sizes:
                continue
            ws = transform_inputs(raw, v.get("input", "as-is"), source_ws)
            settings = EvalSettings(
                dataset=dataset,
                shots=list(shots),
                seeds=seeds,
                head=v.get("head"),
                protocol=v.get("protocol", "primus"),
                min_steps=min_steps,
                device="cpu",
            )
            result = evaluate(loaded, settings, baselines=["classical"], progress=False, windows=ws)
            scores: dict[str, list[float]] = {}
            for run in result.runs:
                scores.setdefault(run["kind"], []).append(run["accuracy"])
            encoder = float(np.mean(scores.get("model", [np.nan])))
            classical = float(
                np.mean([acc for kind, vals in scores.items() if kind != "model" for acc in vals])
            )
            rows.append(
                {
                    "dataset": dataset,
                    "variant": v["name"],
                    "encoder": encoder,
                    "classical": classical,
                    "gap": classical - encoder,
                    "seconds": result.seconds,
                }
            )
            print(f"{dataset} {v['name']}: encoder {encoder:.3f} classical {classical:.3f}")
    report = {
        "format": "primus-transfer-gap/1",
        "model": model,
        "longer": longer,
        "datasets": datasets,
        "shots": list(shots),
        "seeds": seeds,
        "rows": rows,
        "inputs": profiles,
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python -m primus_core.evaluation.transfer_gap " + " ".join(sys.argv[1:]),
    }
    out = Path(out)
    write_json(out / "transfer_gap.json", report)
    write_text(out / "transfer_gap.md", gap_markdown(report))
    return report


def gap_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    device = env.get("gpu") or f"CPU ({env.get('threads')} threads)"
    lines = [
        f"# The gap to the classical features: {report['model']}",
        "",
        f"Linear probe accuracy averaged over {', '.join(map(str, report['shots']))} shots and "
        f"{report['seeds']} seeds; the classical baseline (per-channel statistics + logistic "
        "regression) on the same windows. Gap = classical - encoder (points; lower is better).",
        "",
        f"Command: `{report['command']}`; {device}, torch {env.get('torch')}; "
        f"{report['seconds']:.0f} s.",
        "",
        "| dataset | variant | encoder | classical | gap | change of gap |",
        "|---|---|---|---|---|---|",
    ]
    default = {r["dataset"]: r["gap"] for r in report["rows"] if r["variant"] == "default"}
    for r in report["rows"]:
        change = r["gap"] - default.get(r["dataset"], r["gap"])
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['encoder']:.3f} | {r['classical']:.3f} | "
            f"{100 * r['gap']:+.1f} | {100 * change:+.1f} |"
        )
    lines += [
        "",
        "Inputs as the adapters deliver them (units already converted to m/s^2 and rad/s):",
        "",
        "| dataset | mean abs(acc) | acc axis means | acc std in a window | gyro std in a window |",
        "|---|---|---|---|---|",
    ]
    for name, p in report.get("inputs", {}).items():
        axes = ", ".join(f"{v:+.1f}" for v in p["acc_axis_means"])
        lines.append(
            f"| {name} | {p['acc_norm_mean']:.2f} | {axes} | {p['acc_std']:.2f} | "
            f"{p['gyro_std']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m primus_core.evaluation.transfer_gap", description=__doc__
    )
    p.add_argument("--model", required=True, help="model directory or zoo name")
    p.add_argument("--longer", help="the same recipe pretrained longer (a model directory)")
    p.add_argument("--datasets", default="watch-exercises,basicmotions")
    p.add_argument("--shots", default="1,5")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=300)
    p.add_argument("--variants", help="comma-separated variant names [all]")
    p.add_argument("--out", type=Path, default=Path("runs/transfer-gap"))
    a = p.parse_args(argv)
    from ..errors import PrimusError

    try:
        shots = tuple(int(x) for x in a.shots.split(","))
        run_gap_study(
            a.model,
            [d for d in a.datasets.split(",") if d],
            a.out,
            a.longer,
            shots=shots,
            seeds=a.seeds,
            min_steps=a.min_steps,
            only=a.variants.split(",") if a.variants else None,
        )
    except (PrimusError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
