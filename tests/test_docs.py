"""Docs match the code: every hook is documented in CONTRIBUTING.md and has a test."""

import re

from conftest import REPO
from primus_core.specs import HOOK_NAMES


def test_every_hook_is_documented_in_contributing():
    text = (REPO / "CONTRIBUTING.md").read_text()
    documented = set(re.findall(r"^### (register_\w+)$", text, flags=re.M))
    assert set(HOOK_NAMES) == documented


def test_every_hook_has_a_test():
    sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    tested = set(re.findall(r"def test_hook_(register_[a-z]+)", sources))
    assert set(HOOK_NAMES) <= tested, f"hooks without a test: {set(HOOK_NAMES) - tested}"


def test_readme_commands_are_the_ci_commands():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh && .venv/bin/primus demo" in readme
    assert "bash scripts/setup.sh && bash scripts/test.sh" in readme
    assert "bash scripts/setup.sh" in ci and "bash scripts/test.sh" in ci
