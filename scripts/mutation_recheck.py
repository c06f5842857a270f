"""Re-check the survivors of a finished mutmut 2 run against the tests as they are now.

    python scripts/mutation_recheck.py MUTDIR MODULE_FILE [PYTEST ARGS...]

For every mutant of MODULE_FILE that survived in MUTDIR's cache, the same mutation (mutmut's own
``mutate``, located by the line's text, so it still applies after lines moved) is written into a
fresh copy of this checkout, and pytest runs the given tests there. Prints one line per survivor
(``killed`` or ``survived``) and the totals; the copy is deleted at the end. A full mutmut rerun
would test every mutant again; this tests only the ones the new tests are meant to kill.
"""

from __future__ import annotations

import ast
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def survivors(mutdir: Path, filename: str) -> list[tuple[int, str, int, int]]:
    db = sqlite3.connect(mutdir / ".mutmut-cache")
    return db.execute(
        "select m.id, l.line, l.line_number, m.`index` from Mutant m "
        "join Line l on m.line = l.id join SourceFile s on l.sourcefile = s.id "
        "where s.filename = ? and m.status = 'bad_survived' order by m.id",
        (filename,),
    ).fetchall()


def line_at(source: str, number: int) -> str | None:
    lines = source.splitlines()
    return lines[number] if 0 <= number < len(lines) else None


def mutated_source(source: str, filename: str, line: str, number: int, index: int) -> str | None:
    from mutmut import Context, RelativeMutationID, mutate

    lines = source.splitlines()
    candidates = [i for i, text in enumerate(lines) if text == line]
    if not candidates:
        return None
    nearest = min(candidates, key=lambda i: abs(i - number))
    ctx = Context(
        source=source,
        filename=filename,
        mutation_id=RelativeMutationID(line, index, nearest),
        dict_synonyms=[],
    )
    try:
        mutated, count = mutate(ctx)
    except Exception:  # noqa: BLE001 - parso cannot read this form of the module
        return None
    return mutated if count else None


def apply_mutant(
    original: str, filename: str, line: str, number: int, index: int
) -> tuple[str, str] | None:
    """(the form mutated, the mutant) of a recorded mutation, or None when its line is gone.
    Modules scoped by mutation_scope.py were mutated in their ast.unparse form: use the form
    whose line at the recorded number is the mutant's line, else the nearest match."""
    forms = [original, ast.unparse(ast.parse(original)) + "\n"]
    exact = [f for f in forms if line_at(f, number) == line]
    for form in exact or forms:
        mutated = mutated_source(form, filename, line, number, index)
        if mutated is not None:
            return form, mutated
    return None


def main() -> None:
    mutdir, filename, tests = Path(sys.argv[1]), sys.argv[2], sys.argv[3:] or ["tests"]
    original = (REPO / filename).read_text()
    with tempfile.TemporaryDirectory(prefix="primus-recheck-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(
            REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__")
        )
        env = {**os.environ, "PYTHONPATH": f"{copy}:{copy / 'plugins'}"}
        env["PRIMUS_HYPOTHESIS_EXAMPLES"] = env.get("PRIMUS_HYPOTHESIS_EXAMPLES", "10")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        if subprocess.run(command, cwd=copy, env=env, capture_output=True).returncode:
            sys.exit("the tests fail without any mutation: fix them first")
        killed = survived = missing = 0
        for mutant_id, line, number, index in survivors(mutdir, filename):
            applied = apply_mutant(original, filename, line, number, index)
            source = applied[1] if applied else None
            if source is None:
                print(f"#{mutant_id}: line no longer in {filename}: {line.strip()}")
                missing += 1
                continue
            (copy / filename).write_text(source)
            proc = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
            verdict = "killed" if proc.returncode else "survived"
            killed += verdict == "killed"
            survived += verdict == "survived"
            print(f"#{mutant_id}: {verdict}: {line.strip()}", flush=True)
        (copy / filename).write_text(original)
        print(f"{filename}: {killed} killed, {survived} survived, {missing} gone")


if __name__ == "__main__":
    main()
