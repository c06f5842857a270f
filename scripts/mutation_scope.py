"""Scope mutmut 2 to some functions of a module, and make the module parseable by mutmut.

    python scripts/mutation_scope.py FILE FUNC[,FUNC...]

Run in the mutation copy (scripts/mutation.sh), never in a checkout:
1. FILE is rewritten by ``ast.unparse``: the same code without comments or formatting. mutmut 2's
   parser (parso) cannot read parenthesised ``with (...)`` statements (zoo.py has one).
2. ``coverage run`` of the module's tests must follow; then ``--keep`` (second call) trims
   .coverage to the lines inside the named functions and classes, so ``mutmut run
   --use-coverage`` mutates only them (e.g. the probes of evaluate.py, not its report writers).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def spans(path: Path, names: set[str]) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names:
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def main() -> None:
    path, names = Path(sys.argv[1]), set(sys.argv[2].split(","))
    if "--keep" not in sys.argv:
        path.write_text(ast.unparse(ast.parse(path.read_text())) + "\n")
        return
    from coverage import CoverageData

    keep = spans(path, names)
    missing = names - {n.name for n in ast.walk(ast.parse(path.read_text())) if hasattr(n, "name")}
    if missing:
        sys.exit(f"{path}: no function or class {sorted(missing)}")
    data = CoverageData(".coverage")
    data.read()
    full = str(path.resolve())
    lines = {f: set(data.lines(f) or ()) for f in data.measured_files()}
    data.erase()
    data = CoverageData(".coverage")
    data.add_lines({f: (ls & keep if f == full else ls) for f, ls in lines.items()})
    data.write()


if __name__ == "__main__":
    main()
