"""The encoder's pools: max-pooling for CPU training that keeps one byte per output for
backward, and adaptive average pooling as one product.

torch's max-pool keeps its whole input and 8-byte indices for backward: at PRIMUS's batch of
256 (two views) that is 33 MB for the encoder's two max-pools. ``max_pool`` keeps each
maximum's offset in its window (one byte), and computes the same values and gradients (the
first maximum of a window takes the gradient, as in torch). It runs through the compiled
kernels of ``primus_core.native``; ``pools_natively`` says when it applies.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from primus_core import native


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        library = native.kernels()
        out, offset = native.max_pool(library, x.contiguous(), k)
        ctx.save_for_backward(offset)
        ctx.length, ctx.k = x.shape[-1], k
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (offset,) = ctx.saved_tensors
        grad = native.max_pool_backward(native.kernels(), grad_out, offset, ctx.length, ctx.k)
        return grad, None


def pools_natively(pool: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``max_pool`` computes ``pool(x)``: a 1-d max-pool with stride = kernel < 256,
    no padding, dilation or ceil mode, on a float32 CPU tensor, with the kernels there."""
    return (
        isinstance(pool, nn.MaxPool1d)
        and isinstance(pool.kernel_size, int)
        and pool.stride in (pool.kernel_size, (pool.kernel_size,))
        and pool.padding in (0, (0,))
        and pool.dilation in (1, (1,))
        and not pool.ceil_mode
        and not pool.return_indices
        and 0 < pool.kernel_size < 256
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and native.kernels() is not None
    )


def max_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """Max-pool the last dimension of ``x`` by windows of ``k`` (stride k)."""
    return _MaxPool.apply(x, k)


@functools.lru_cache(maxsize=16)
def _averaging_matrix(length: int, bins: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """(length, bins): column j averages the inputs of adaptive-average bin j, which spans
    [floor(j L / bins), ceil((j + 1) L / bins)) as in torch.nn.AdaptiveAvgPool1d."""
    matrix = torch.zeros(length, bins, dtype=torch.float64)
    for j in range(bins):
        start, end = (j * length) // bins, -((-(j + 1) * length) // bins)
        matrix[start:end, j] = 1.0 / (end - start)
    return matrix.to(dtype=dtype, device=device)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``AdaptiveAvgPool1d(bins)(x)`` as one product with a fixed averaging matrix: torch's
    CPU adaptive pooling loops plane by plane (1.7 ms for the encoder's 256 x 32 x 15 -> 32;
    the product takes a few microseconds), the same values to rounding."""
    return x @ _averaging_matrix(x.shape[-1], bins, x.dtype, str(x.device))
