"""Augmentation defaults and configs against docs/objectives.md (the table is parsed here, so the
doc and the code cannot drift), exact error text, and unknown parameters refused."""

from __future__ import annotations

import re

import numpy as np
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


def test_time_warp_is_exactly_the_documented_formula():
    """The docs' recipe written out in numpy: knots + 2 speeds from N(1, sigma) spread evenly over
    [0, T-1], linear between them, clamped at 1e-2; positions = the running sum from 0, rescaled
    to end at T-1; x linearly interpolated there (so the first and last samples stay put)."""
    batch, channels, samples, sigma, knots = 4, 3, 37, 0.6, 3
    x = torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(2))
    cls, config = AUGMENTATIONS["time-warp"]
    got = cls(config(sigma=sigma, knots=knots))(x, torch.Generator().manual_seed(5))
    draws = torch.randn((batch, 1, knots + 2), generator=torch.Generator().manual_seed(5))
    speeds = 1.0 + sigma * draws.numpy()[:, 0].astype(np.float64)
    t = np.arange(samples)
    want = np.empty((batch, channels, samples))
    clamped = 0
    for b in range(batch):
        speed = np.interp(t, np.linspace(0, samples - 1, knots + 2), speeds[b])
        clamped += int((speed < 1e-2).sum())
        speed = np.maximum(speed, 1e-2)
        position = np.cumsum(speed) - speed[0]
        position = position / position[-1] * (samples - 1)
        for c in range(channels):
            want[b, c] = np.interp(position, t, x[b, c].numpy())
    assert clamped > 0  # sigma 0.6 draws some negative speeds: the clamp is exercised
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)  # float32 sums
    torch.testing.assert_close(got[..., [0, -1]], x[..., [0, -1]])


def test_rotate_refuses_a_group_naming_a_channel_the_input_lacks():
    cls, config = AUGMENTATIONS["rotate"]
    rotate = cls(config(groups=[[0, 1, 2], [3, 4, 5]]))
    with pytest.raises(DataError) as caught:
        rotate(torch.zeros(2, 5, 10), torch.Generator().manual_seed(0))  # channel 5 of 0..4
    assert str(caught.value) == (
        "augmentation 'rotate': channel 5 named in groups, but the input has 5 channels"
    )
    assert rotate(torch.zeros(2, 6, 10), torch.Generator()).shape == (2, 6, 10)  # 0..5 is fine
