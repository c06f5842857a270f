"""Wall time and peak memory of the commands that must answer at once (issue 14).

Each command runs in a fresh interpreter (``python -m primus_core ...``), as a user runs it;
the figures kept are the median wall time and CPU time (user + system, which other load on the
machine disturbs less) over ``--repeat`` runs and the largest peak RSS. Target: under 0.5 s and
150 MB each. Usage::

    python benchmarks/light_commands.py [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["--help"],
    ["--version"],
    ["plugins", "list"],
    ["components", "list"],
    ["recipes", "list"],
    ["recipes", "show", "primus-hapt"],
    ["zoo", "list"],
    ["zoo", "info", "primus-hapt-stackrnn"],
    ["data", "list"],
]
TARGET_S, TARGET_MB = 0.5, 150.0


def run_once(args: list[str]) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds, peak RSS in MB and exit status of one ``primus ARGS`` run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "primus_core", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="Also write the rows to this file.")
    opts = parser.parse_args()
    rows = []
    for args in COMMANDS:
        runs = [run_once(args) for _ in range(opts.repeat)]
        row = {
            "command": "primus " + " ".join(args),
            "median_s": statistics.median(r[0] for r in runs),
            "cpu_s": statistics.median(r[1] for r in runs),
            "peak_mb": max(r[2] for r in runs),
            "exit": max(r[3] for r in runs),
        }
        row["met"] = row["median_s"] < TARGET_S and row["peak_mb"] < TARGET_MB
        rows.append(row)
        print(
            f"{row['command']:<40} {row['median_s']:6.2f} s wall {row['cpu_s']:6.2f} s CPU"
            f" {row['peak_mb']:7.0f} MB"
            f"  exit {row['exit']}  {'ok' if row['met'] else 'MISSED'}",
            flush=True,
        )
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as handle:
            json.dump({"python": sys.version.split()[0], "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
