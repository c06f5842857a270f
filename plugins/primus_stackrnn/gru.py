"""A single-layer GRU scan with a hand-written backward pass, for the CPU.

Same parameters and results as ``torch.nn.GRU`` (batch_first, one layer, zero initial state,
returns the last hidden state). The input projection of every step is one product up front; each
step then runs one (B, H) x (H, 3H) product and a few fused element-wise ops written into
preallocated buffers. The backward pass runs one (B, 3H) x (3H, H) product per step and computes
the weight gradients once, as large products over all steps, instead of one small one per step.
"""

from __future__ import annotations

import torch
from torch import nn


def _scan(x, w_ih, w_hh, b_ih, b_hh, keep: bool):
    """Forward scan; with ``keep`` it also returns what the backward pass needs."""
    batch, steps, inputs = x.shape
    hidden = w_hh.shape[1]
    gi = torch.addmm(b_ih, x.reshape(batch * steps, inputs), w_ih.t()).view(batch, steps, -1)
    hs = x.new_zeros(steps + 1, batch, hidden)
    gh = x.new_empty(steps if keep else 1, batch, 3 * hidden)  # hidden projections
    rz = x.new_empty(steps if keep else 1, batch, 2 * hidden)  # reset and update gates
    n = x.new_empty(steps if keep else 1, batch, hidden)  # candidate state
    w_hh_t = w_hh.t()
    for t in range(steps):
        s = t if keep else 0
        torch.addmm(b_hh, hs[t], w_hh_t, out=gh[s])
        torch.add(gi[:, t, : 2 * hidden], gh[s, :, : 2 * hidden], out=rz[s]).sigmoid_()
        r, z = rz[s, :, :hidden], rz[s, :, hidden:]
        torch.addcmul(gi[:, t, 2 * hidden :], r, gh[s, :, 2 * hidden :], out=n[s]).tanh_()
        torch.lerp(n[s], hs[t], z, out=hs[t + 1])  # (1 - z) n + z h
    return hs, gh, rz, n


class _GRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        hs, gh, rz, n = _scan(x, w_ih, w_hh, b_ih, b_hh, keep=True)
        ctx.save_for_backward(x, w_ih, w_hh, hs, gh, rz, n)
        return hs[-1]

    @staticmethod
    def backward(ctx, grad_h):
        x, w_ih, w_hh, hs, gh, rz, n = ctx.saved_tensors
        steps, batch, hidden = n.shape
        d_gi = x.new_empty(steps, batch, 3 * hidden)  # gradient w.r.t. the input projections
        d_gh = x.new_empty(steps, batch, 3 * hidden)  # ... and w.r.t. the hidden projections
        dh = grad_h.contiguous()
        for t in reversed(range(steps)):
            r, z = rz[t, :, :hidden], rz[t, :, hidden:]
            d_r, d_z, d_n = d_gi[t].split(hidden, dim=1)
            # h = (1 - z) n + z h_prev;  n = tanh(i_n + r * h_n);  r, z = sigmoid(...)
            torch.mul(dh, 1 - z, out=d_n).mul_(1 - n[t] * n[t])
            torch.mul(d_n, gh[t, :, 2 * hidden :], out=d_r).mul_(r * (1 - r))
            torch.mul(dh, hs[t] - n[t], out=d_z).mul_(z * (1 - z))
            d_gh[t, :, : 2 * hidden].copy_(d_gi[t, :, : 2 * hidden])
            torch.mul(d_n, r, out=d_gh[t, :, 2 * hidden :])
            dh = torch.addmm(dh * z, d_gh[t], w_hh)
        flat_gh = d_gh.view(steps * batch, 3 * hidden)
        flat_gi = d_gi.transpose(0, 1).reshape(batch * steps, 3 * hidden)
        inputs = x.shape[2]
        need = ctx.needs_input_grad
        d_x = (flat_gi @ w_ih).view(batch, steps, inputs) if need[0] else None
        d_w_ih = flat_gi.t() @ x.reshape(batch * steps, inputs) if need[1] else None
        d_w_hh = flat_gh.t() @ hs[:-1].reshape(steps * batch, hidden) if need[2] else None
        d_b_ih = flat_gi.sum(0) if need[3] else None
        d_b_hh = flat_gh.sum(0) if need[4] else None
        return d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_last_hidden(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Last hidden state of a one-layer batch_first ``nn.GRU`` over x (batch, steps, inputs)."""
    params = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _GRUScan.apply(x, *params)
    return _scan(x, *params, keep=False)[0][-1]
