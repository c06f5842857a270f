"""The bench's measurements of two checkouts, alternated measurement by measurement on the same
machine (each in its own process), so that a change in the machine's load falls on both.

    git worktree add /tmp/before <commit>
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/before_after.py /tmp/before ROUNDS OUT.json [KINDS]

KINDS (optional): a comma-separated subset of the measures (step, inference) to run.

Each checkout runs from its own folder (``PYTHONPATH`` and the working directory), with this
environment's packages. Rows: round, code, measure, batch, variant, windows/s, peak RSS (MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLAN = [
    ("step", 16, "eager"),
    ("step", 256, "eager"),
    ("inference", 256, "fp32"),
    ("inference", 256, "bf16"),
    ("inference", 256, "int8"),
]


def measure(root: Path, kind: str, batch: int, variant: str) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{root}:{root}/plugins")
    code = (
        "import json; from primus_core.training.bench import child; "
        f"print(json.dumps(child({kind!r}, {batch}, 'cpu', 3.0, {variant!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(before: str, rounds: int, out: str, kinds: str = "") -> None:
    codes = {"before": Path(before).resolve(), "after": Path(__file__).resolve().parents[1]}
    rows = []
    for round_ in range(rounds):
        for kind, batch, variant in PLAN:
            if kinds and kind not in kinds.split(","):
                continue
            for code, root in codes.items():
                result = measure(root, kind, batch, variant)
                row = {"round": round_, "code": code, "measure": kind, "batch": batch}
                row.update(variant=variant, windows_per_s=result["windows_per_s"])
                row.update(peak_mib=result["peak_mib"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:2], int(sys.argv[2]), *sys.argv[3:5])
