"""Summarise a mutmut 2 cache: killed / survived / timeout per module, and every survivor's diff.

    python scripts/mutation_summary.py [MUTDIR] [--show]   # default /tmp/primus-mutation

--show prints each survivor's diff with `mutmut show`. Only use it once the run has finished:
`mutmut show` re-reads the source file, and during a run that file holds a mutant, which
corrupts the cache (mutmut 2 then stops with "Attribute Mutant.line is required").
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

STATUS = {
    "ok_killed": "killed",
    "bad_survived": "survived",
    "bad_timeout": "timeout",
    "ok_suspicious": "suspicious",
    "skipped": "skipped",
    "untested": "untested",
}


def main(mutdir: Path, show: bool) -> None:
    db = sqlite3.connect(mutdir / ".mutmut-cache")
    rows = db.execute(
        "select m.id, s.filename, m.status from Mutant m join Line l on m.line = l.id "
        "join SourceFile s on l.sourcefile = s.id order by s.filename, m.id"
    ).fetchall()
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[int]] = defaultdict(list)
    for mutant_id, filename, status in rows:
        counts[filename][STATUS.get(status, status)] += 1
        if status == "bad_survived":
            survivors[filename].append(mutant_id)
    print("| module | mutants | killed | survived | timeout | untested | score |")
    print("|---|---|---|---|---|---|---|")
    for filename, c in counts.items():
        tested = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"]
        score = (c["killed"] + c["timeout"]) / tested if tested else 0.0
        print(
            f"| {filename} | {sum(c.values())} | {c['killed']} | {c['survived']} | "
            f"{c['timeout']} | {c['untested']} | {score:.0%} |"
        )
    mutmut = Path(sys.executable).parent / "mutmut"
    for filename, ids in survivors.items() if show else ():
        print(f"\n### survivors in {filename}\n")
        for mutant_id in ids:
            shown = subprocess.run(
                [str(mutmut), "show", str(mutant_id)], cwd=mutdir, capture_output=True, text=True
            ).stdout
            lines = [x for x in shown.splitlines() if x[:2] in ("- ", "+ ")]
            print(f"- #{mutant_id}: `{' / '.join(x.strip() for x in lines)[:200]}`")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--show"]
    main(Path(args[0] if args else "/tmp/primus-mutation"), "--show" in sys.argv)
