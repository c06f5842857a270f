"""Augmentation defaults and configs against docs/objectives.md (the table is parsed here, so the
doc and the code cannot drift), exact error text, and unknown parameters refused."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from conftest import REPO
from primus_core.errors import DataError
from primus_objectives import AUGMENTATIONS as NAMED_AUGMENTATIONS
from primus_objectives import augment as augment_module

# name -> (class, config class): the plugin registers its classes as "module:attr" names
AUGMENTATIONS = {
    name: (getattr(augment_module, factory.split(":")[1]), config)
    for name, (factory, config) in NAMED_AUGMENTATIONS.items()
}


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


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_augmentation_names_itself_in_errors(name):
    cls, config = AUGMENTATIONS[name]
    with pytest.raises(DataError, match=f"^augmentation '{name}' expects"):
        cls(config())(torch.zeros(2, 250), torch.Generator())
    assert repr(cls(config())) == f"{cls.__name__}({config()!r})"


def test_config_bounds():
    _, permute = AUGMENTATIONS["permute"]
    _, warp = AUGMENTATIONS["time-warp"]
    _, negate = AUGMENTATIONS["negate"]
    _, rotate = AUGMENTATIONS["rotate"]
    assert permute(segments=1).segments == 1 and warp(knots=1).knots == 1
    assert negate(p=1.0).p == 1.0
    for bad in (lambda: negate(p=1.5), lambda: negate(p=-0.1), lambda: permute(segments=0)):
        with pytest.raises(ValidationError):
            bad()
    for groups in ([[0, 1, 1]], [[-1, 0, 1]], [[0, 1, 2], [2, 3, 4]]):
        with pytest.raises(ValidationError, match="distinct and non-negative"):
            rotate(groups=groups)


def test_two_segments_swap_the_halves_about_half_the_time():
    cls, config = AUGMENTATIONS["permute"]
    x = torch.arange(2.0).expand(4000, 1, 2)  # one cut possible: after the first sample
    out = cls(config(segments=2))(x, torch.Generator().manual_seed(0))
    swapped = (out[:, 0, 0] == 1).double().mean()
    assert abs(float(swapped) - 0.5) < 0.05
    one = cls(config(segments=1))(x, torch.Generator().manual_seed(0))
    assert torch.equal(one, x)


def test_noise_is_exactly_the_documented_formula():
    """x + sigma * N(0, 1) and x * (1 + sigma * N(0, 1)), drawn from the given generator."""
    x = torch.randn(3, 6, 20, generator=torch.Generator().manual_seed(5))
    for name, shape, combine in [
        ("jitter", (3, 6, 20), lambda x, n: x + 0.1 * n),
        ("scale-per-channel", (3, 6, 1), lambda x, n: x * (1 + 0.25 * n)),
        ("scale-per-timestep", (3, 1, 20), lambda x, n: x * (1 + 0.25 * n)),
    ]:
        cls, config = AUGMENTATIONS[name]
        got = cls(config())(x, torch.Generator().manual_seed(9))
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(got, combine(x, noise))
