"""Augmentation defaults and configs against docs/objectives.md (the table is parsed here, so the
doc and the code cannot drift), exact error text, and unknown parameters refused."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from conftest import REPO
from primus_core.errors import DataError
from primus_objectives.augment import AUGMENTATIONS


def documented_defaults() -> dict[str, dict[str, object]]:
    """name -> {param: default} from the augmentation table of docs/objectives.md."""
    text = (REPO / "docs" / "objectives.md").read_text()
    out: dict[str, dict[str, object]] = {}
    for name, params in re.findall(r"^\| `([a-z-]+)` \| ([^|]+) \|", text, flags=re.M):
        if name not in AUGMENTATIONS:
            continue
        found = re.findall(r"`(\w+)` \(([^)]*(?:\][^)]*)?)\)", params)
        out[name] = {key: eval(value) for key, value in found}  # noqa: S307 - numbers and lists
    return out


def test_every_default_is_the_documented_one():
    docs = documented_defaults()
    assert set(docs) == set(AUGMENTATIONS)
    for name, (_, config_cls) in AUGMENTATIONS.items():
        config = config_cls()
        assert config.model_dump() == docs[name], name


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_unknown_parameters_are_refused(name):
    _, config_cls = AUGMENTATIONS[name]
    with pytest.raises(ValidationError, match="bogus"):
        config_cls(bogus=1)


def test_bad_input_names_the_augmentation_and_the_shape():
    cls, config = AUGMENTATIONS["jitter"]
    with pytest.raises(DataError) as info:
        cls(config())(torch.zeros(3, 4), torch.Generator())
    assert str(info.value) == (
        "augmentation 'jitter' expects (batch, channels, samples), got shape (3, 4)"
    )


@pytest.mark.parametrize("name", ["negate", "flip", "channel-shuffle"])
def test_probability_zero_changes_nothing_and_one_changes_every_window(name):
    cls, config = AUGMENTATIONS[name]
    x = torch.randn(64, 6, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cls(config(p=0.0))(x, torch.Generator().manual_seed(1)), x)
    changed = cls(config(p=1.0))(x, torch.Generator().manual_seed(1))
    assert all(not torch.equal(changed[i], x[i]) for i in range(len(x)))
