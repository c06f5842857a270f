"""Summarise a mutmut 2 cache: killed / survived / timeout per module, and every survivor's diff.

    python scripts/mutation_summary.py [MUTDIR] [--show]   # default /tmp/primus-mutation

--show prints each survivor's diff, rebuilt from the checkout's source (as scripts/mutation.sh
copied it, ast.unparse'd for scoped modules). It never calls `mutmut show`: that re-reads the
mutated copy and, during a run, corrupts the cache ("Attribute Mutant.line is required").
"""

from __future__ import annotations

import difflib
import sqlite3
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
    for filename, ids in survivors.items() if show else ():
        print(f"\n### survivors in {filename}\n")
        for mutant_id in ids:
            print(f"- #{mutant_id}: `{diff_of(db, mutant_id, filename)}`")


def diff_of(db: sqlite3.Connection, mutant_id: int, filename: str) -> str:
    from mutation_recheck import apply_mutant  # this folder is on sys.path when run as a script

    line, number, index = db.execute(
        "select l.line, l.line_number, m.`index` from Mutant m join Line l on m.line = l.id "
        "where m.id = ?",
        (mutant_id,),
    ).fetchone()
    original = (Path(__file__).resolve().parent.parent / filename).read_text()
    applied = apply_mutant(original, filename, line, number, index)
    if applied is None:
        return "(source changed since the run)"
    source, mutated = applied
    changed = [
        x[1:].strip()
        for x in difflib.unified_diff(source.splitlines(), mutated.splitlines(), n=0)
        if x[:1] in "+-" and x[:3] not in ("+++", "---")
    ]
    return " / ".join(changed)[:220]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--show"]
    main(Path(args[0] if args else "/tmp/primus-mutation"), "--show" in sys.argv)
