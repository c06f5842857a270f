"""A one-layer, batch-first GRU whose backward pass is written by hand (the training path on the
CPU). It computes what ``torch.nn.GRU`` computes, from the same parameters, with:
- the input projection of every step in one matrix product (forward and backward);
- per step, one product with W_hh forward and one backward, and a few fused element-wise ops
  (sigmoid on r and z together, addcmul, tanh, lerp);
- the weight gradients in one product per chunk of 8 steps (only a chunk's gate gradients held);
- only r, z, n, W_hn h + b_hn and the hidden states kept for backward (autograd's GRU keeps
  about three times as much).

Gates follow torch.nn.GRU (r, z, n order):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(... z ...)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h = lerp(n, h, z)
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK_STEPS = 8  # steps whose gate gradients are held at once (weight gradients per chunk)


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        batch, steps, _ = x.shape
        hidden = h0.shape[1]
        x_steps = x.transpose(0, 1).reshape(steps * batch, -1)  # time-major, small
        gi = torch.addmm(b_ih, x_steps, w_ih.t()).view(steps, batch, 3 * hidden)
        hs = x.new_empty(steps + 1, batch, hidden)  # hs[t] is the state before step t
        rz = x.new_empty(steps, batch, 2 * hidden)
        ns = x.new_empty(steps, batch, hidden)
        hn = x.new_empty(steps, batch, hidden)
        hs[0] = h0
        w_hh_t = w_hh.t()
        for t in range(steps):
            gh = torch.addmm(b_hh, hs[t], w_hh_t)
            torch.add(gi[t, :, : 2 * hidden], gh[:, : 2 * hidden], out=rz[t]).sigmoid_()
            hn[t] = gh[:, 2 * hidden :]
            r, z = rz[t, :, :hidden], rz[t, :, hidden:]
            torch.addcmul(gi[t, :, 2 * hidden :], r, hn[t], out=ns[t]).tanh_()
            torch.lerp(ns[t], hs[t], z, out=hs[t + 1])
        ctx.save_for_backward(x_steps, w_ih, w_hh, hs, rz, ns, hn)
        return hs[1:].transpose(0, 1), hs[steps].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        x_steps, w_ih, w_hh, hs, rz, ns, hn = ctx.saved_tensors
        steps, batch, hidden = ns.shape
        chunk = min(steps, CHUNK_STEPS)
        # per chunk of steps: d(pre-activation) of r, z, n (the r and z parts are also
        # d(W_hh h + b_hh)) and d(W_hn h + b_hn); the weight gradients are summed chunk by chunk
        gates = x_steps.new_empty(chunk, batch, 3 * hidden)
        grad_hn = x_steps.new_empty(chunk, batch, hidden)
        grad_x = x_steps.new_empty(steps, batch, x_steps.shape[1])
        grad_w_ih, grad_w_hh = torch.zeros_like(w_ih), torch.zeros_like(w_hh)
        grad_b_ih = w_ih.new_zeros(3 * hidden)
        grad_b_hn = w_ih.new_zeros(hidden)
        dh = grad_last.clone() if grad_last is not None else x_steps.new_zeros(batch, hidden)
        grad_out = None if grad_out is None else grad_out.transpose(0, 1)
        w_hrz, w_hn = w_hh[: 2 * hidden], w_hh[2 * hidden :]
        for end in range(steps, 0, -chunk):
            begin = max(end - chunk, 0)
            for t in range(end - 1, begin - 1, -1):
                if grad_out is not None:
                    dh += grad_out[t]
                r, z = rz[t, :, :hidden], rz[t, :, hidden:]
                n, h, i = ns[t], hs[t], t - begin
                dr, dz, dn = gates[i].split(hidden, dim=1)
                torch.mul(dh, 1 - z, out=dn).mul_(1 - n * n)  # through the lerp, then tanh
                torch.mul(dh, h - n, out=dz).mul_(z * (1 - z))
                torch.mul(dn, hn[t], out=dr).mul_(r * (1 - r))
                torch.mul(dn, r, out=grad_hn[i])
                dh = torch.addmm(dh * z, gates[i, :, : 2 * hidden], w_hrz)
                dh.addmm_(grad_hn[i], w_hn)
            rows = (end - begin) * batch
            flat = gates[: end - begin].view(rows, 3 * hidden)
            flat_hn = grad_hn[: end - begin].view(rows, hidden)
            h_prev = hs[begin:end].reshape(rows, hidden)
            x_rows = x_steps[begin * batch : end * batch]
            torch.mm(flat, w_ih, out=grad_x[begin:end].view(rows, -1))
            grad_w_ih.addmm_(flat.t(), x_rows)
            grad_w_hh[: 2 * hidden].addmm_(flat[:, : 2 * hidden].t(), h_prev)
            grad_w_hh[2 * hidden :].addmm_(flat_hn.t(), h_prev)
            grad_b_ih += flat.sum(0)
            grad_b_hn += flat_hn.sum(0)
        grad_b_hh = torch.cat([grad_b_ih[: 2 * hidden], grad_b_hn])
        return grad_x.transpose(0, 1), dh, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def gru_sequence(gru: nn.GRU, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output (batch, steps, hidden), h_n (1, batch, hidden)) of a one-layer, unidirectional,
    batch-first ``gru`` with biases, starting from zeros; same values as ``gru(x)``."""
    h0 = x.new_zeros(x.shape[0], gru.hidden_size)
    out, last = _GRUSequence.apply(
        x, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    )
    return out, last.unsqueeze(0)


def supports_fused(gru: nn.GRU) -> bool:
    return (
        gru.num_layers == 1
        and not gru.bidirectional
        and gru.batch_first
        and gru.bias
        and gru.proj_size == 0
    )
