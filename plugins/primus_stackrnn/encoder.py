"""The PRIMUS stacked-RNN IMU encoder (and its IMU2CLIP variant), weight-compatible with the
reference implementation (module names follow its state dict: backbone.0-5, ssl_head, mmcl_head)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from primus_core.config import IMUContract
from primus_core.data.gru_scan import gru_scan, scannable

from .config import IMU2CLIPConfig, StackedRNNConfig, _conv_out, conv_length, time_bins
from .gru import gru_sequence, supports_fused
from .pool import adaptive_avg_pool, max_pool, pools_natively

__all__ = ["IMU2CLIPConfig", "StackedRNNConfig", "StackedRNNEncoder", "conv_length", "time_bins"]


class ConvBlock(nn.Module):
    """Conv1d without bias, then a pooling layer (``net.0`` is the conv, as in the reference)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: nn.Module):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, dilation=2, bias=False), pool)

    def forward(self, x: torch.Tensor, norm: nn.GroupNorm | None = None) -> torch.Tensor:
        """The block on ``x``, or on ``norm(x)`` where ``norm`` is given (see ``norm_then_conv``)."""
        conv, pool = self.net
        y = conv(x) if norm is None else norm_then_conv(x, norm, conv)
        if torch.is_grad_enabled() and pools_natively(pool, y):  # CPU training: 1 byte kept
            return max_pool(y, pool.kernel_size)
        if isinstance(pool, nn.AdaptiveAvgPool1d) and isinstance(pool.output_size, int):
            return adaptive_avg_pool(y, pool.output_size)
        return pool(y)


def norm_then_conv(x: torch.Tensor, norm: nn.GroupNorm, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(norm(x))`` with the norm's per-channel scale and shift moved into the conv's
    weights and a bias (the conv pads nothing, so a shift adds the same to every output):
    sum_c,k W[o,c,k] (g_c xhat + b_c) = sum (W g) xhat + sum_c,k W b. The same values to
    rounding; where ``x`` needs no gradient, the conv's backward then skips its input's
    gradient, which the unfolded form computes only for the norm's scale and shift (9-10 ms
    of a training step at batch 256 here)."""
    xhat = F.group_norm(x, norm.num_groups, eps=norm.eps)
    if not norm.affine:
        return conv(xhat)
    weight = conv.weight * norm.weight[None, :, None]
    bias = (conv.weight * norm.bias[None, :, None]).sum(dim=(1, 2))
    return conv._conv_forward(xhat, weight, bias)


class StackedRNNEncoder(nn.Module):
    """PRIMUS stacked-RNN IMU encoder: GroupNorm, 3 dilated convs, GroupNorm, GRU, linear heads."""

    def __init__(self, cfg: StackedRNNConfig):
        super().__init__()
        self.config = cfg
        c, k = len(cfg.channels), cfg.conv_channels
        last_pool = (
            nn.AdaptiveAvgPool1d(cfg.pooled_bins) if cfg.pool == "adaptive" else nn.MaxPool1d(3)
        )
        self.backbone = nn.Sequential(
            nn.GroupNorm(cfg.norm_groups, c),
            ConvBlock(c, k, 10, nn.MaxPool1d(3)),
            ConvBlock(k, k, 5, nn.MaxPool1d(3)),
            ConvBlock(k, k, 5, last_pool),
            nn.GroupNorm(4 if k % 4 == 0 else 1, k),
            nn.GRU(time_bins(cfg), cfg.hidden_size, num_layers=1, batch_first=True),
        )
        self.ssl_head = nn.Linear(cfg.hidden_size, cfg.ssl_dim) if cfg.ssl_dim else None
        self.mmcl_head = nn.Linear(cfg.hidden_size, cfg.mmcl_dim) if cfg.mmcl_dim else None
        self.imu_contract = IMUContract(
            channels=cfg.channels,
            units=cfg.units,
            rate_hz=cfg.rate_hz,
            window_samples=cfg.window_samples,
        )
        self.output_sizes = {"emb": cfg.hidden_size}
        if cfg.ssl_dim:
            self.output_sizes["ssl"] = cfg.ssl_dim
        if cfg.mmcl_dim:
            self.output_sizes["mmcl"] = cfg.mmcl_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, samples) -> (batch, hidden) GRU last hidden state."""
        if torch.is_grad_enabled() and not x.requires_grad:  # training: see norm_then_conv
            features = self.backbone[2:5](self.backbone[1](x, norm=self.backbone[0]))
        else:
            features = self.backbone[:5](x)  # (batch, conv_channels, time_bins)
        gru = self.backbone[5]  # the GRU scans the conv channels (reference quirk)
        on_cpu = features.device.type == "cpu"
        same_dtype = features.dtype == gru.weight_hh_l0.dtype  # not so under CPU autocast
        if on_cpu and torch.is_grad_enabled() and same_dtype and supports_fused(gru):
            _, h_n = gru_sequence(gru, features)  # training on a CPU: hand-written backward
        elif on_cpu and not torch.is_grad_enabled() and scannable(gru):
            _, h_n = gru_scan(gru, features)  # inference on a CPU: few operators per step
        else:
            _, h_n = gru(features)
        return h_n[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.embed(x)
        out = {"emb": emb}
        if self.ssl_head is not None:
            out["ssl"] = self.ssl_head(emb)
        if self.mmcl_head is not None:
            out["mmcl"] = self.mmcl_head(emb)
        return out

    def multiply_adds_per_window(self) -> int:
        """Forward multiply-adds of one window (convs, GRU, heads), for compute-bound figures."""
        cfg, total = self.config, 0
        length = cfg.window_samples
        c_in = len(cfg.channels)
        for kernel in (10, 5, 5):
            length = _conv_out(length, kernel)
            total += length * cfg.conv_channels * c_in * kernel
            c_in = cfg.conv_channels
            length //= 3
        gru = self.backbone[5]
        steps, h = cfg.conv_channels, cfg.hidden_size
        total += steps * 3 * h * (gru.input_size + h)
        total += cfg.hidden_size * (cfg.ssl_dim + cfg.mmcl_dim)
        return total
