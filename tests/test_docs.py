"""Docs match the code: every hook is documented in CONTRIBUTING.md and has a test."""

import re

import pytest

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


@pytest.mark.slow
def test_the_demo_runs_each_step_the_readme_lists(cli, tmp_path):
    """README "Try it": the recipes, the encoder, real HAPT windows embedded, a short
    pretraining into runs/demo-*/model, the shipped model pulled by name, and both evaluated
    few-shot on watch exercises next to the classical baseline (2 steps, 16 windows here)."""
    out = cli("demo", "--steps", "2", "--windows", "16", "--out", tmp_path).out
    sections = [line[3:] for line in out.splitlines() if line.startswith("== ")]
    assert [s.split(":")[0].split(" (")[0] for s in sections] == [
        "recipes",
        "PRIMUS encoder",
        "real data",
        "embedding",
        "pretraining",
        "zoo",
        "few-shot evaluation",
    ]
    assert "primus-hapt          ss+mm+nn     hapt       ready" in out
    assert "stacked-rnn: 1,376,204 parameters" in out
    assert "input (16, 6, 250) -> mmcl (16, 512)" in out
    assert "2 steps in" in out and "over the last 2 (" in out
    (model,) = tmp_path.glob("demo-*/model")
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()
    assert "primus-hapt-stackrnn" in out and "sha256 checked" in out
    accuracies = re.findall(r"^  (.+?)\s+(\d)-shot accuracy (\d\.\d{3}) \+- ", out, flags=re.M)
    systems = {name.strip() for name, _, _ in accuracies}
    assert systems == {"just pretrained", "classical (features + logreg)", "primus-hapt-stackrnn"}
    assert {shots for _, shots, _ in accuracies} == {"1", "5"}
    assert all(0.0 <= float(acc) <= 1.0 for _, _, acc in accuracies)
