"""IMU augmentations: batched torch transforms of (batch, channels, samples) tensors.

Every augmentation is called as ``aug(x, generator)`` and returns a new tensor of the same shape
and dtype on x's device. All randomness is drawn from ``generator`` (on x's device, or on the CPU
and then moved), so a run is reproducible from its seed. There is no Python loop over the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pydantic import BaseModel

from primus_core.errors import DataError

from .config import (
    PermuteConfig,
    ScalePerTimestepConfig,
)

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# ---------------------------------------------------------------- random draws
def _on(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return value.to(device=x.device)


def _randn(x: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return _on(x, torch.randn(shape, generator=gen, device=gen.device))


def _rand(x: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return _on(x, torch.rand(shape, generator=gen, device=gen.device))


def _check_input(x: torch.Tensor, name: str) -> None:
    if x.dim() != 3:
        raise DataError(
            f"augmentation '{name}' expects (batch, channels, samples), got shape {tuple(x.shape)}"
        )


def _per_sample(x: torch.Tensor, changed: torch.Tensor, p: float, gen: torch.Generator):
    """``changed`` where a per-sample Bernoulli(p) draw says so, x elsewhere."""
    if p >= 1.0:
        return changed
    pick = _rand(x, (x.shape[0], 1, 1), gen) < p
    return torch.where(pick, changed, x)


# ---------------------------------------------------------------- transforms
class _Base:
    name = "augmentation"

    def __init__(self, config: BaseModel):
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_input(x, self.name)
        return self.apply(x, generator)

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class ScalePerTimestep(_Base):
    name = "scale-per-timestep"

    def apply(self, x, gen):
        factor = 1.0 + self.config.sigma * _randn(x, (x.shape[0], 1, x.shape[2]), gen)
        return x * factor.to(x.dtype)


class ScalePerChannel(_Base):
    name = "scale-per-channel"

    def apply(self, x, gen):
        factor = 1.0 + self.config.sigma * _randn(x, (x.shape[0], x.shape[1], 1), gen)
        return x * factor.to(x.dtype)


class Jitter(_Base):
    name = "jitter"

    def apply(self, x, gen):
        return x + (self.config.sigma * _randn(x, tuple(x.shape), gen)).to(x.dtype)


def permutation_indices(
    batch: int, samples: int, segments: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(batch, samples) source indices: random cuts into ``segments`` non-empty pieces, pieces
    put in a random order. Vectorised over the batch (sort, searchsorted, no loop)."""
    segments = min(segments, samples)
    if segments <= 1:
        return torch.arange(samples, device=device).expand(batch, samples)
    # segments - 1 distinct cut points in 1..samples-1: the first entries of a random ordering
    order = torch.rand((batch, samples - 1), generator=gen, device=gen.device).argsort(dim=1)
    cuts = (order[:, : segments - 1] + 1).sort(dim=1).values.to(device)
    zero = torch.zeros((batch, 1), dtype=cuts.dtype, device=device)
    end = torch.full((batch, 1), samples, dtype=cuts.dtype, device=device)
    starts = torch.cat([zero, cuts], dim=1)  # (B, S)
    lengths = torch.cat([cuts, end], dim=1) - starts
    perm = torch.rand((batch, segments), generator=gen, device=gen.device).argsort(dim=1).to(device)
    new_lengths = lengths.gather(1, perm)
    new_ends = new_lengths.cumsum(dim=1)
    new_starts = new_ends - new_lengths
    t = torch.arange(samples, device=device).expand(batch, samples).contiguous()
    piece = torch.searchsorted(new_ends, t, right=True)  # which output segment holds t
    source_start = starts.gather(1, perm).gather(1, piece)
    return source_start + (t - new_starts.gather(1, piece))


class Permute(_Base):
    name = "permute"

    def apply(self, x, gen):
        batch, channels, samples = x.shape
        idx = permutation_indices(batch, samples, self.config.segments, gen, x.device)
        return x.gather(2, idx.unsqueeze(1).expand(batch, channels, samples))


def random_rotations(batch: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, 3, 3) rotations uniform on SO(3), from normalised Gaussian quaternions."""
    q = torch.randn((batch, 4), generator=gen, device=gen.device, dtype=torch.float64)
    w, a, b, c = (q / q.norm(dim=1, keepdim=True)).unbind(dim=1)
    rows = [
        1 - 2 * (b * b + c * c),
        2 * (a * b - c * w),
        2 * (a * c + b * w),
        2 * (a * b + c * w),
        1 - 2 * (a * a + c * c),
        2 * (b * c - a * w),
        2 * (a * c - b * w),
        2 * (b * c + a * w),
        1 - 2 * (a * a + b * b),
    ]
    return torch.stack(rows, dim=1).reshape(batch, 3, 3)


class Rotate(_Base):
    name = "rotate"

    def apply(self, x, gen):
        groups = self.config.groups
        top = max(i for g in groups for i in g)
        if top >= x.shape[1]:
            raise DataError(
                f"augmentation 'rotate': channel {top} named in groups, but the input "
                f"has {x.shape[1]} channels"
            )
        rot = random_rotations(x.shape[0], gen).to(device=x.device, dtype=x.dtype)
        out = x.clone()
        for group in groups:
            out[:, group, :] = torch.einsum("bij,bjt->bit", rot, x[:, group, :])
        return out


class Negate(_Base):
    name = "negate"

    def apply(self, x, gen):
        return _per_sample(x, -x, self.config.p, gen)


class Flip(_Base):
    name = "flip"

    def apply(self, x, gen):
        return _per_sample(x, x.flip(dims=(2,)), self.config.p, gen)


class ChannelShuffle(_Base):
    name = "channel-shuffle"

    def apply(self, x, gen):
        batch, channels, samples = x.shape
        order = _rand(x, (batch, channels), gen).argsort(dim=1)
        shuffled = x.gather(1, order.unsqueeze(2).expand(batch, channels, samples))
        return _per_sample(x, shuffled, self.config.p, gen)


def warp_positions(
    batch: int, samples: int, sigma: float, knots: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(batch, samples) monotone positions from 0 to samples - 1: the running integral of a
    piecewise-linear positive speed curve through knots + 2 points drawn from N(1, sigma)."""
    speed_knots = 1.0 + sigma * torch.randn((batch, 1, knots + 2), generator=gen, device=gen.device)
    speed = (
        torch.nn.functional.interpolate(
            speed_knots.to(device), size=samples, mode="linear", align_corners=True
        )
        .squeeze(1)
        .clamp(min=1e-2)
    )
    position = torch.cumsum(speed, dim=1)
    position = position - position[:, :1]
    return position / position[:, -1:].clamp(min=1e-12) * (samples - 1)


class TimeWarp(_Base):
    name = "time-warp"

    def apply(self, x, gen):
        batch, channels, samples = x.shape
        if samples < 2:
            return x.clone()
        pos = warp_positions(batch, samples, self.config.sigma, self.config.knots, gen, x.device)
        left = pos.floor().long().clamp(0, samples - 2)
        weight = (pos - left).to(x.dtype).unsqueeze(1)
        left = left.unsqueeze(1).expand(batch, channels, samples)
        return x.gather(2, left) * (1 - weight) + x.gather(2, left + 1) * weight


class AugmentationPipeline:
    """Augmentations applied in order, all drawing from the same generator."""

    def __init__(self, augmentations: Sequence[Augmentation]):
        self.augmentations = list(augmentations)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for aug in self.augmentations:
            x = aug(x, generator)
        return x

    def __len__(self) -> int:
        return len(self.augmentations)

    def __repr__(self) -> str:
        return f"AugmentationPipeline({self.augmentations!r})"


def primus_pipeline() -> AugmentationPipeline:
    """The augmentation PRIMUS trains with: the reference's scaling (one N(1, 0.25) factor per
    time step, shared by the channels), then permutation (5 segments)."""
    return AugmentationPipeline(
        [ScalePerTimestep(ScalePerTimestepConfig()), Permute(PermuteConfig())]
    )
