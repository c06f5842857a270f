"""Issue 14's smaller items: field descriptions in `components list`, one seed without a spread,
plain file modes for JSON written atomically, and `python -m primus_core`."""

from __future__ import annotations

import os
import stat

from primus_core.evaluation.reports import markdown_table, summarise
from primus_core.paths import current_umask, write_json


def test_components_list_shows_field_descriptions(cli):
    out = cli("components", "list", "--kind", "augmentation").out
    assert "sigma: float = 0.25  - std of the multiplicative factor" in out


def test_one_seed_has_no_spread():
    runs = [
        {"model": "m", "shots": 5, "accuracy": 0.5, "macro_f1": 0.4, "mean_class_accuracy": 0.5}
    ]
    (row,) = summarise(runs)
    assert row["n"] == 1 and row["accuracy_std"] == 0.0  # the JSON keeps a number
    table = markdown_table([row])
    assert "0.500" in table and "±" not in table


def test_atomic_json_gets_plain_modes(tmp_path):
    path = write_json(tmp_path / "x.json", {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()
