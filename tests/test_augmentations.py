"""The IMU augmentations: shapes, dtypes, seeded reproducibility, and what each one preserves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import primus_core
from primus_core.errors import ComponentError, DataError
from primus_objectives import AugmentationPipeline, primus_pipeline

NAMES = [
    "scale-per-timestep",
    "scale-per-channel",
    "permute",
    "jitter",
    "rotate",
    "negate",
    "flip",
    "channel-shuffle",
    "time-warp",
]
RANDOM = [
    "scale-per-timestep",
    "scale-per-channel",
    "permute",
    "jitter",
    "rotate",
    "channel-shuffle",
    "time-warp",
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def windows(batch: int = 8, channels: int = 6, samples: int = 250, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, samples, generator=gen(seed))


def test_hook_register_augmentations_every_augmentation_is_registered():
    names = {c.name for c in primus_core.list_components("augmentation")}
    assert set(NAMES) <= names


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_input_untouched(name, dtype):
    aug = primus_core.create("augmentation", name)
    x = windows().to(dtype)
    before = x.clone()
    out = aug(x, gen(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.equal(x, before)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", RANDOM)
def test_reproducible_from_a_seed_and_different_across_seeds(name):
    aug = primus_core.create("augmentation", name)
    x = windows()
    assert torch.equal(aug(x, gen(7)), aug(x, gen(7)))
    assert not torch.equal(aug(x, gen(7)), aug(x, gen(8)))
    assert not torch.equal(aug(x, gen(7)), x)


def reference_scaling(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The reference's scaling (lib/imu_transforms.py scaling_transform_vectorized), written
    afresh: the (B, C, T) window times N(1, sigma) noise of shape (B, 1, T)."""
    return x * rng.normal(1.0, sigma, size=(x.shape[0], 1, x.shape[2]))


def test_scale_per_timestep_is_the_references_noise():
    x = windows(batch=400, samples=50).abs() + 0.5
    out = primus_core.create("augmentation", "scale-per-timestep", sigma=0.25)(x, gen(2))
    factor = (out / x).double()
    # one factor per (window, time step), shared by the six channels: channel correlation 1
    assert torch.allclose(factor, factor[:, :1, :].expand_as(factor), atol=1e-5)
    corr = np.corrcoef(factor[:, 0, :].reshape(-1).numpy(), factor[:, 3, :].reshape(-1).numpy())
    assert corr[0, 1] == pytest.approx(1.0, abs=1e-9)
    # per-time-step mean 1 and variance sigma^2 (over windows), independent across time steps
    per_step = factor[:, 0, :]
    assert float(per_step.var(dim=0).mean()) == pytest.approx(0.25**2, rel=0.05)
    assert float(per_step.mean()) == pytest.approx(1.0, abs=0.01)
    lagged = np.corrcoef(per_step[:, :-1].reshape(-1).numpy(), per_step[:, 1:].reshape(-1).numpy())
    assert abs(lagged[0, 1]) < 0.02
    # the same statistics as the reference formula, drawn with numpy
    ref = reference_scaling(x.double().numpy(), 0.25, np.random.default_rng(0)) / x.double().numpy()
    assert ref.shape == tuple(factor.shape)
    assert np.allclose(ref, ref[:, :1, :])
    assert float(ref[:, 0, :].var(axis=0).mean()) == pytest.approx(
        float(per_step.var(dim=0).mean()), rel=0.08
    )


def test_scale_per_channel_is_one_factor_per_sample_and_channel():
    x = windows(batch=512, samples=20).abs() + 0.5
    out = primus_core.create("augmentation", "scale-per-channel", sigma=0.25)(x, gen(2))
    factor = out / x
    assert torch.allclose(factor, factor[..., :1].expand_as(factor), atol=1e-5)
    assert float(factor[..., 0].std()) == pytest.approx(0.25, rel=0.05)
    assert float(factor[..., 0].mean()) == pytest.approx(1.0, abs=0.02)
    # channels draw their own factors: no correlation between channels
    corr = np.corrcoef(factor[:, 0, 0].numpy(), factor[:, 3, 0].numpy())
    assert abs(corr[0, 1]) < 0.15


def test_jitter_adds_noise_of_sigma():
    x = windows(batch=64)
    noise = primus_core.create("augmentation", "jitter", sigma=0.1)(x, gen(3)) - x
    assert float(noise.std()) == pytest.approx(0.1, rel=0.03)


def test_permutation_keeps_every_sample_and_moves_channels_together():
    base = torch.arange(250.0).expand(16, 250)
    x = torch.stack([base + 1000.0 * c for c in range(6)], dim=1)  # (16, 6, 250)
    out = primus_core.create("augmentation", "permute", segments=5)(x, gen(4))
    # the multiset of samples of every channel is unchanged
    assert torch.equal(out.sort(dim=2).values, x.sort(dim=2).values)
    # all channels of a window follow the same order
    assert torch.equal(out - out[:, :1], x - x[:, :1])
    # at most 4 cuts: each output is at most 5 runs of consecutive samples
    jumps = (out[:, 0].diff(dim=1) != 1).sum(dim=1)
    assert int(jumps.max()) <= 4 and int(jumps.sum()) > 0
    assert len({tuple(row.tolist()) for row in out[:, 0, :5]}) > 1  # per-window orders differ


def test_rotation_preserves_norms_and_turns_acc_and_gyro_alike():
    x = windows()
    x[:, 3:] = x[:, :3]  # gyro = acc, so the same rotation keeps them equal
    out = primus_core.create("augmentation", "rotate")(x, gen(5))
    for group in (slice(0, 3), slice(3, 6)):
        torch.testing.assert_close(out[:, group].norm(dim=1), x[:, group].norm(dim=1))
    torch.testing.assert_close(out[:, :3], out[:, 3:])
    assert not torch.allclose(out, x)


def test_rotation_groups_are_configurable_and_checked():
    x = windows(channels=3)
    out = primus_core.create("augmentation", "rotate", groups=[[0, 1, 2]])(x, gen(6))
    torch.testing.assert_close(out.norm(dim=1), x.norm(dim=1))
    with pytest.raises(DataError, match="channel 5"):
        primus_core.create("augmentation", "rotate")(x, gen(6))
    with pytest.raises(ComponentError, match="exactly 3"):
        primus_core.create("augmentation", "rotate", groups=[[0, 1]])


def test_negate_flip_and_channel_shuffle():
    x = windows()
    assert torch.equal(primus_core.create("augmentation", "negate")(x, gen(0)), -x)
    assert torch.equal(primus_core.create("augmentation", "flip")(x, gen(0)), x.flip(2))
    assert torch.equal(primus_core.create("augmentation", "flip", p=0.0)(x, gen(0)), x)
    half = primus_core.create("augmentation", "negate", p=0.5)(windows(batch=64), gen(0))
    flipped = (half == -windows(batch=64)).all(dim=(1, 2))
    assert 0 < int(flipped.sum()) < 64
    out = primus_core.create("augmentation", "channel-shuffle")(x, gen(9))
    for b in range(x.shape[0]):  # every output channel is one input channel, each used once
        match = (out[b].unsqueeze(1) == x[b].unsqueeze(0)).all(dim=2)
        assert torch.equal(match.sum(dim=1), torch.ones(6, dtype=torch.long))
        assert torch.equal(match.sum(dim=0), torch.ones(6, dtype=torch.long))


def test_time_warp_is_a_smooth_monotone_resampling():
    ramp = torch.arange(250.0).expand(8, 6, 250).contiguous()
    out = primus_core.create("augmentation", "time-warp", sigma=0.2, knots=4)(ramp, gen(10))
    steps = out.diff(dim=2)
    assert (steps > 0).all()  # monotone
    assert torch.allclose(out[..., 0], torch.zeros(8, 6)) and torch.allclose(
        out[..., -1], torch.full((8, 6), 249.0), atol=1e-3
    )
    assert not torch.allclose(out, ramp, atol=0.5)
    assert float(steps.diff(dim=2).abs().max()) < 0.05  # smooth: the local speed changes slowly


def test_pipeline_applies_in_order_with_one_generator():
    x = windows()
    scale = primus_core.create("augmentation", "scale-per-timestep")
    permute = primus_core.create("augmentation", "permute")
    g = gen(11)
    by_hand = permute(scale(x, g), g)
    assert torch.equal(primus_pipeline()(x, gen(11)), by_hand)
    assert torch.equal(AugmentationPipeline([scale, permute])(x, gen(11)), by_hand)
    assert len(primus_pipeline()) == 2


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="batch, channels, samples"):
        primus_core.create("augmentation", "scale-per-timestep")(torch.zeros(6, 250), gen(0))
    with pytest.raises(ComponentError, match="sigma"):
        primus_core.create("augmentation", "jitter", sigma=-1)


def test_permutation_cuts_are_distinct_so_five_segments_are_never_empty():
    """T = 5 samples, 5 segments: only 4 distinct cuts in 1 .. 4 exist, so every sample is its
    own segment and each of the 5! = 120 orders comes out equally often (200 of 24,000 each).
    A cut at 0 or a repeated cut makes an empty segment: fewer pieces, and the orders that keep
    neighbours together (the identity first) come out far more often."""
    x = torch.arange(5.0).expand(24_000, 1, 5).contiguous()
    out = primus_core.create("augmentation", "permute", segments=5)(x, gen(12))
    orders = out[:, 0].to(torch.int64)
    assert torch.equal(orders.sort(dim=1).values, x[:, 0].to(torch.int64))
    codes = (orders * torch.tensor([625, 125, 25, 5, 1])).sum(dim=1)
    _, counts = codes.unique(return_counts=True)
    assert len(counts) == 120
    assert int(counts.min()) > 200 - 70 and int(counts.max()) < 200 + 70  # 5 sd of 14
    identity = int((codes == 0 * 625 + 1 * 125 + 2 * 25 + 3 * 5 + 4).sum())
    assert identity < 200 + 70
