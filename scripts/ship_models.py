"""Ship the models of a `primus experiment benchmark` run in zoo/ with their measured figures.

    .venv/bin/python scripts/ship_models.py runs/benchmark [--zoo zoo]

For each pretrained recipe of the benchmark: copy OUT/runs/RECIPE/model to zoo/RECIPE-stackrnn,
put the benchmark's few-shot results into config.json ("evaluation") and the model card, and print
the registry.yaml zoo entries (sha256 of every file) to paste.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

from primus_core.paths import sha256_file
from primus_core.zoo.modeldir import CARD, CONFIG, WEIGHTS, model_card

HEADLINE = ("watch-exercises", 5)  # cross-domain, 5 shots per class


def evaluation_rows(benchmark: dict, recipe: str) -> list[dict]:
    rows = []
    for dataset, result in benchmark["results"].items():
        for row in result["summary"]:
            if row["model"] == recipe:
                rows.append(
                    {
                        "dataset": dataset,
                        "mode": row["mode"],
                        "shots": row["shots"],
                        "seeds": row["n"],
                        "accuracy": round(row["accuracy_mean"], 4),
                        "accuracy_std": round(row["accuracy_std"], 4),
                        "macro_f1": round(row["macro_f1_mean"], 4),
                    }
                )
    return rows


def ship(bench_dir: Path, zoo: Path, recipe: str, benchmark: dict) -> dict:
    source = bench_dir / "runs" / recipe / "model"
    name = f"{recipe}-stackrnn"
    target = zoo / name
    tmp = zoo / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    config = json.loads((tmp / CONFIG).read_text())
    rows = evaluation_rows(benchmark, recipe)
    pretraining = benchmark["pretraining"][recipe]
    config.update(
        {
            "name": name,
            "evaluation": rows,
            "benchmark": {
                "steps": pretraining["steps"],
                "overrides": pretraining["overrides"],
                "environment": benchmark["environment"],
            },
        }
    )
    (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    body = (
        f"The stacked-RNN PRIMUS encoder pretrained with the `{recipe}` recipe on UCI HAPT "
        f"(waist smartphone; {pretraining['steps']} steps on a CPU; 9 of the 30 subjects held "
        "out). The evaluation table is the few-shot linear probe of `primus experiment "
        "benchmark`: cross-domain on the seglearn watch exercises and BasicMotions (wrist), "
        "in-domain on the held-out HAPT subjects; mean over seeds."
    )
    (tmp / CARD).write_text(model_card(config, title=name, body=body))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    headline = next((r for r in rows if (r["dataset"], r["shots"]) == HEADLINE), None)
    params = sum(t.numel() for t in load_file(str(target / WEIGHTS)).values())
    return {
        name: {
            "description": f"stacked-rnn pretrained with {recipe} on UCI HAPT (offline data)",
            "source": {"shipped": f"zoo/{name}"},
            "files": {p.name: sha256_file(p) for p in sorted(target.iterdir())},
            "recipe": recipe,
            "training_data": ["hapt"],
            "parameters": params,
            "metrics": {f"{r['dataset']}_{r['shots']}shot_accuracy": r["accuracy"] for r in rows},
            "headline_metric": (f"{HEADLINE[0]}_{HEADLINE[1]}shot_accuracy" if headline else None),
            "licence": "cc-by-4.0",
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark_dir", type=Path)
    parser.add_argument("--zoo", type=Path, default=Path("zoo"))
    args = parser.parse_args()
    benchmark = json.loads((args.benchmark_dir / "benchmark.json").read_text())
    entries = {}
    for recipe in benchmark["pretraining"]:
        entries.update(ship(args.benchmark_dir, args.zoo, recipe, benchmark))
    import yaml

    print(yaml.safe_dump(entries, sort_keys=False, width=100))


if __name__ == "__main__":
    main()
