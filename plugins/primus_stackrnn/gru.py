"""A single-layer GRU scan with a hand-written backward pass, for training on the CPU.

Same parameters and results as ``torch.nn.GRU`` (batch_first, one layer, zero initial state,
returns the last hidden state). The backward pass runs one (B, 3H) x (3H, H) product per step and
computes the weight gradients once, as two large matrix products over all steps, instead of one
small product per step; the input projection of every step is computed up front in one product.
"""

from __future__ import annotations

import torch
from torch import nn


class _GRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        batch, steps, inputs = x.shape
        hidden = w_hh.shape[1]
        gi = torch.addmm(b_ih, x.reshape(batch * steps, inputs), w_ih.t())
        gi = gi.view(batch, steps, 3 * hidden).transpose(0, 1)  # (T, B, 3H)
        hs = x.new_zeros(steps + 1, batch, hidden)
        gates = x.new_empty(steps, batch, 4 * hidden)  # r, z, n, and the hidden part of n
        w_hh_t = w_hh.t()
        for t in range(steps):
            gh = torch.addmm(b_hh, hs[t], w_hh_t)
            i_r, i_z, i_n = gi[t].chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(torch.addcmul(i_n, r, h_n))
            torch.lerp(n, hs[t], z, out=hs[t + 1])  # n + z * (h - n)
            torch.cat([r, z, n, h_n], dim=1, out=gates[t])
        ctx.save_for_backward(x, w_ih, w_hh, hs, gates)
        return hs[steps]

    @staticmethod
    def backward(ctx, grad_h):
        x, w_ih, w_hh, hs, gates = ctx.saved_tensors
        steps, batch, hidden = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        d_gi = x.new_empty(steps, batch, 3 * hidden)
        d_gh = x.new_empty(steps, batch, 3 * hidden)
        dh = grad_h.contiguous()
        for t in reversed(range(steps)):
            r, z, n, h_n = gates[t].chunk(4, 1)
            h_prev = hs[t]
            d_n = dh * (1 - z) * (1 - n * n)  # through h = (1-z) n + z h_prev and tanh
            d_r = d_n * h_n * r * (1 - r)
            d_z = dh * (h_prev - n) * z * (1 - z)
            torch.cat([d_r, d_z, d_n], dim=1, out=d_gi[t])
            torch.cat([d_r, d_z, d_n * r], dim=1, out=d_gh[t])
            dh = torch.addmm(dh * z, d_gh[t], w_hh)
        flat_gh = d_gh.view(steps * batch, 3 * hidden)
        flat_gi = d_gi.transpose(0, 1).reshape(batch * steps, 3 * hidden)
        inputs = x.shape[2]
        d_x = d_w_ih = d_w_hh = d_b_ih = d_b_hh = None
        if ctx.needs_input_grad[0]:
            d_x = (flat_gi @ w_ih).view(batch, steps, inputs)
        if ctx.needs_input_grad[1]:
            d_w_ih = flat_gi.t() @ x.reshape(batch * steps, inputs)
        if ctx.needs_input_grad[2]:
            d_w_hh = flat_gh.t() @ hs[:-1].reshape(steps * batch, hidden)
        if ctx.needs_input_grad[3]:
            d_b_ih = flat_gi.sum(0)
        if ctx.needs_input_grad[4]:
            d_b_hh = flat_gh.sum(0)
        return d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_last_hidden(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Last hidden state of a one-layer batch_first ``nn.GRU`` over x (batch, steps, inputs)."""
    return _GRUScan.apply(x, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
