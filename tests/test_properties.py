"""Property-based tests (hypothesis) where the input space is large: resampling, windowing,
augmentations and the embedding input path. Each property is checked against a formula written
here, never against the code under test."""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from primus_core.data.embed import embed_windows, prepare_windows
from primus_core.data.windows import gather_windows, resample, resampled_length, sliding_windows
from primus_core.errors import DataError
from primus_objectives import AUGMENTATIONS as NAMED_AUGMENTATIONS
from primus_objectives import augment as augment_module
from primus_objectives.augment import permutation_indices, warp_positions

# name -> (class, config class): the plugin registers its classes as "module:attr" names
AUGMENTATIONS = {
    name: (getattr(augment_module, factory.split(":")[1]), config)
    for name, (factory, config) in NAMED_AUGMENTATIONS.items()
}

# scripts/mutation.sh lowers the example count: it runs these tests once per mutant
EXAMPLES = int(os.environ.get("PRIMUS_HYPOTHESIS_EXAMPLES", "40"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
rates = st.integers(min_value=5, max_value=1000).map(float)


# ------------------------------------------------------------------ resampling
def ratio(rate_from: float, rate_to: float) -> tuple[int, int]:
    """up, down: the rate ratio as a fraction with a denominator of at most 1000."""
    frac = Fraction(rate_to / rate_from).limit_denominator(1000)
    return frac.numerator, frac.denominator


def expected_length(n: int, rate_from: float, rate_to: float) -> int:
    up, down = ratio(rate_from, rate_to)
    return math.ceil(n * up / down)


@FAST
@given(n=st.integers(1, 3000), rate_from=rates, rate_to=rates)
def test_resampled_length_is_the_ceiling_of_n_times_the_ratio(n, rate_from, rate_to):
    assume(abs(rate_from - rate_to) > 1e-9 or rate_from == rate_to)
    out = resample(np.zeros((n, 2)), rate_from, rate_to)
    assert out.shape == (expected_length(n, rate_from, rate_to), 2)
    assert resampled_length(n, rate_from, rate_to) == out.shape[0]
    # the length is within one sample of the duration times the new rate
    assert abs(out.shape[0] - n * rate_to / rate_from) <= 1 + n * 1e-3 * rate_to / rate_from


@FAST
@given(
    n=st.integers(2, 2000),
    rate_from=rates,
    rate_to=rates,
    value=st.floats(-100, 100, allow_nan=False),
    slope=st.floats(-1, 1),
)
def test_constants_and_trends_survive_resampling_up_to_the_edges(
    n, rate_from, rate_to, value, slope
):
    """The linear end padding: a gravity offset (and a slow trend) keeps its value in the first
    and last samples too; zero padding would pull the edges towards 0. The tolerance is the
    polyphase filter's pass-band ripple (0.3 % of the signal's range)."""
    t = np.arange(n) / rate_from
    x = (value + slope * t)[:, None]
    out = resample(x, rate_from, rate_to)[:, 0]
    up, down = ratio(rate_from, rate_to)
    t_out = np.arange(len(out)) * down / up / rate_from
    # the exact output times follow the rational ratio actually used
    want = value + slope * t_out
    scale = max(np.abs(want).max(), np.abs(x).max(), 1e-3)
    assert np.max(np.abs(out - want)) <= 3e-3 * scale, (out[:3], want[:3])


@settings(max_examples=max(5, EXAMPLES * 5 // 8), deadline=None)
@given(
    rate_to=st.integers(10, 200).map(float),
    factor=st.floats(2.0, 8.0),
    where=st.floats(0.7, 0.9),
)
def test_no_energy_above_the_new_nyquist(rate_to, factor, where):
    """A tone between the new Nyquist and the old one is removed, not aliased."""
    rate_from = round(rate_to * factor)
    nyq_to, nyq_from = rate_to / 2, rate_from / 2
    freq = nyq_to + where * (nyq_from - nyq_to)  # well inside the stop band
    assume(freq > 1.25 * nyq_to)
    t = np.arange(int(rate_from * 20)) / rate_from
    out = resample(np.sin(2 * np.pi * freq * t)[:, None], rate_from, rate_to)[:, 0]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out)))) / (np.hanning(len(out)).sum() / 2)
    assert spectrum.max() < 0.02, spectrum.max()  # < -34 dB of the unit-amplitude tone


@settings(max_examples=max(5, EXAMPLES * 5 // 8), deadline=None)
@given(rate_from=rates, rate_to=rates, where=st.floats(0.05, 0.6))
def test_tones_below_both_nyquists_keep_their_amplitude(rate_from, rate_to, where):
    freq = where * min(rate_from, rate_to) / 2
    t = np.arange(int(rate_from * 10)) / rate_from
    out = resample(np.sin(2 * np.pi * freq * t)[:, None], rate_from, rate_to)[:, 0]
    t_out = np.arange(len(out)) / rate_to
    ratio = rate_to / rate_from
    # actual output rate: the approximated ratio (limit_denominator) times rate_from
    true_rate = expected_length(len(t), rate_from, rate_to) / len(t) * rate_from
    assume(abs(true_rate - rate_to) / rate_to < 1e-3 or ratio == 1)
    want = np.sin(2 * np.pi * freq * t_out)
    edge = max(5, len(out) // 10)
    assert np.max(np.abs(out[edge:-edge] - want[edge:-edge])) < 0.05


# ------------------------------------------------------------------ windowing
@FAST
@given(
    n=st.integers(1, 400),
    window=st.integers(1, 64),
    stride=st.integers(1, 80),
    min_fill=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    channels=st.integers(1, 4),
)
def test_sliding_windows_count_placement_and_padding(n, window, stride, min_fill, channels):
    x = np.arange(n * channels, dtype=np.float64).reshape(n, channels) + 1.0  # no zeros
    windows, starts = sliding_windows(x, window, stride, min_fill)
    full = (n - window) // stride + 1 if n >= window else 0
    covered = (full - 1) * stride + window if full else 0
    tail = n - covered
    extra = tail >= max(1, math.ceil(min_fill * window))
    assert len(starts) == full + extra
    assert windows.shape == (full + extra, channels, window) and windows.dtype == np.float32
    assert starts.tolist() == [i * stride for i in range(full + extra)]
    for i, s in enumerate(starts.tolist()):
        inside = max(0, min(window, n - s))
        np.testing.assert_array_equal(windows[i, :, :inside], x[s : s + inside].T)
        assert not windows[i, :, inside:].any()  # zero padding past the end only
        if i < full:
            assert inside == window


@FAST
@given(n=st.integers(1, 50), window=st.integers(1, 20), starts=st.lists(st.integers(0, 60)))
def test_gather_windows_is_slicing_with_zero_padding(n, window, starts):
    x = np.random.default_rng(n).normal(size=(n, 3))
    got = gather_windows(x, np.array(starts, np.int64), window)
    assert got.shape == (len(starts), 3, window)
    for i, s in enumerate(starts):
        want = np.zeros((window, 3))
        part = x[s : s + window]
        want[: len(part)] = part
        np.testing.assert_allclose(got[i], want.T.astype(np.float32))


# ------------------------------------------------------------------ augmentations
SHAPES = st.tuples(st.integers(1, 6), st.just(6), st.integers(1, 40))  # rotate: 2 triads


def make(name: str, **params):
    cls, config = AUGMENTATIONS[name]
    return cls(config(**params))


@FAST
@given(shape=SHAPES, name=st.sampled_from(sorted(AUGMENTATIONS)), seed=st.integers(0, 2**31))
def test_augmentations_keep_shape_dtype_and_are_seeded(shape, name, seed):
    aug = make(name)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    a = aug(x, torch.Generator().manual_seed(seed))
    b = aug(x, torch.Generator().manual_seed(seed))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    assert torch.equal(x, torch.randn(shape, generator=torch.Generator().manual_seed(1)))


@FAST
@given(shape=SHAPES, seed=st.integers(0, 2**31))
def test_value_preserving_augmentations_keep_the_multiset_of_values(shape, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    # permute reorders samples within each window (same order for all channels)
    out = make("permute", segments=4)(x, gen)
    assert torch.equal(out.sort(dim=2).values, x.sort(dim=2).values)
    # flip, negate, channel-shuffle with p=1 are exact transforms
    assert torch.equal(make("flip", p=1.0)(x, gen), x.flip(2))
    assert torch.equal(make("negate", p=1.0)(x, gen), -x)
    shuffled = make("channel-shuffle", p=1.0)(x, gen)
    assert torch.equal(shuffled.sort(dim=1).values, x.sort(dim=1).values)
    # rotate keeps each 3-axis vector's length
    rotated = make("rotate")(x, gen)
    for group in ([0, 1, 2], [3, 4, 5]):
        torch.testing.assert_close(rotated[:, group].norm(dim=1), x[:, group].norm(dim=1))


@FAST
@given(batch=st.integers(1, 5), samples=st.integers(1, 60), segments=st.integers(1, 10))
def test_permutation_indices_are_permutations_of_contiguous_pieces(batch, samples, segments):
    idx = permutation_indices(batch, samples, segments, torch.Generator(), torch.device("cpu"))
    assert idx.shape == (batch, samples)
    for row in idx.tolist():
        assert sorted(row) == list(range(samples))
        breaks = sum(1 for a, b in zip(row, row[1:], strict=False) if b != a + 1)
        assert breaks <= min(segments, samples) - 1


@FAST
@given(batch=st.integers(1, 4), samples=st.integers(2, 80), sigma=st.floats(0, 1))
def test_time_warp_positions_are_monotone_from_start_to_end(batch, samples, sigma):
    pos = warp_positions(batch, samples, sigma, 4, torch.Generator(), torch.device("cpu"))
    assert torch.all(pos[:, 1:] >= pos[:, :-1])
    torch.testing.assert_close(pos[:, 0], torch.zeros(batch))
    torch.testing.assert_close(pos[:, -1], torch.full((batch,), samples - 1.0))


def test_random_draw_statistics():
    """Factor and noise statistics over many draws match the configured sigma."""
    x = torch.ones(4000, 3, 50, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    jitter = make("jitter", sigma=0.1)(x, gen) - x
    assert abs(float(jitter.mean())) < 0.002 and abs(float(jitter.std()) - 0.1) < 0.002
    per_step = make("scale-per-timestep", sigma=0.25)(x, gen)
    assert torch.equal(per_step[:, 0], per_step[:, 2])  # one factor shared by the channels
    assert abs(float(per_step.mean()) - 1) < 0.005 and abs(float(per_step.std()) - 0.25) < 0.005
    per_channel = make("scale-per-channel", sigma=0.25)(x, gen)
    assert torch.equal(per_channel[:, :, 0], per_channel[:, :, -1])  # one factor per channel
    assert abs(float(per_channel[:, :, 0].std()) - 0.25) < 0.01
    negated = make("negate", p=0.3)(x, gen)
    assert abs(float((negated[:, 0, 0] < 0).double().mean()) - 0.3) < 0.03
    rotations = make("rotate", groups=[[0, 1, 2]])(
        torch.eye(3, dtype=torch.float64).expand(4000, 3, 3), gen
    )
    # uniform on SO(3): each entry of a rotation has mean 0 and variance 1/3
    assert float(rotations.mean(0).abs().max()) < 0.05
    assert float((rotations.var(0) - 1 / 3).abs().max()) < 0.03


# ------------------------------------------------------------------ the embedding input path
@pytest.fixture(scope="module")
def tiny_encoder():
    from primus_core import create

    torch.manual_seed(0)
    return create("encoder", "stacked-rnn", hidden_size=8).eval()


DTYPES = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8]
)


@settings(
    max_examples=EXAMPLES * 3 // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    array=st.one_of(
        hnp.arrays(DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, max_side=8)),
        hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, 2), st.just(6), st.integers(250, 260)),
            elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
        ),
        hnp.arrays(
            DTYPES,
            st.tuples(st.integers(1, 2), st.just(6), st.integers(250, 260)),
        ),
        hnp.arrays(DTYPES, st.tuples(st.just(6), st.integers(240, 520))),
    ),
    input_rate=st.sampled_from([None, 50.0, 25.0, 100.0]),
)
def test_embedding_input_gives_finite_embeddings_or_one_data_error(tiny_encoder, array, input_rate):
    try:
        windows = prepare_windows(
            array, channels=6, window=250, rate_hz=50.0, input_rate_hz=input_rate
        )
        out = embed_windows(tiny_encoder, windows, head="emb")
    except DataError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.ndim == 2 and out.shape[0] == windows.shape[0] >= 1
    assert np.isfinite(out).all()


def test_embedding_rejects_non_numbers_and_complex():
    with pytest.raises(DataError, match="expected real numbers"):
        prepare_windows(np.array([["a"] * 300] * 6), channels=6, window=250, rate_hz=50.0)
    with pytest.raises(DataError, match="expected real numbers"):
        prepare_windows(np.ones((6, 300), bool), channels=6, window=250, rate_hz=50.0)
    with pytest.raises(DataError):
        prepare_windows(np.ones((6, 300), complex), channels=6, window=250, rate_hz=50.0)
