"""A one-layer, batch-first GRU whose backward pass is written by hand (the training path on the
CPU). It computes what ``torch.nn.GRU`` computes, from the same parameters, with:
- each step's input projection computed where it is used, its biases on a column of ones;
- per step, one product with W_hh forward and one backward (r, z and n together), W_hh packed
  once per call for MKL's product where torch has it, and the step's element-wise work in one
  compiled kernel (``primus_core.native``; where it cannot be built, a few torch operators:
  sigmoid on r and z together, addcmul, tanh, lerp);
- the weight and input gradients in one product each per chunk of steps (2,048 rows: 4 steps
  at batch 512; only a chunk's gate gradients held), the input biases' on the column of ones;
- only r, z, W_hn h + b_hn and the hidden states kept for backward (autograd's GRU keeps
  about four times as much); n is computed again in backward from its input projection, one
  small product per chunk and a tanh per unit (34 MB less at batch 512).

Gates follow torch.nn.GRU (r, z, n order):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(... z ...)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h = lerp(n, h, z)
"""

from __future__ import annotations

import torch
from torch import nn

from primus_core import native
from primus_core.data.gru_scan import (
    input_projections,
    input_weights_with_biases,
    packed_product,
    with_ones,
)

CHUNK_ROWS = 2048  # rows (steps x batch) whose gate gradients are held at once in backward


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        batch, steps, _ = x.shape
        hidden = h0.shape[1]
        x_steps = x.transpose(0, 1).reshape(steps * batch, -1)  # time-major, small
        # the input projection's bias, and W_hh's for r and z, ride on a column of ones
        x1 = with_ones(x_steps).view(steps, batch, -1)
        w_ih1_t = input_weights_with_biases(w_ih, b_ih, b_hh)  # (features + 1, 3 hidden)
        project = input_projections(x1, w_ih1_t, x.dtype)
        recurrent = packed_product(w_hh, batch)  # W_hh packed once for this call's steps
        if recurrent is None:
            w_hh_t = w_hh.t()

            def recurrent(h):
                return torch.mm(h, w_hh_t)

        b_hn = b_hh[2 * hidden :]
        hs = x.new_empty(steps + 1, batch, hidden)  # hs[t] is the state before step t
        rz = x.new_empty(steps, batch, 2 * hidden)
        hn = x.new_empty(steps, batch, hidden)
        hs[0] = h0
        library = native.kernels() if x.device.type == "cpu" and x.dtype == torch.float32 else None
        states = hs.unbind(0)  # views made once (not one per use per step)
        # the step's element-wise work in one pass, the buffers' addresses worked out once
        kernel = None if library is None else native.forward_steps(library, hs, b_hn, rz, hn)
        for t in range(steps):
            # this step's input projection only (all steps at once: 100 MB at batch 512)
            gi = project(t)
            gh = recurrent(states[t])
            if kernel is not None:
                kernel(t, gi, gh)
                continue
            torch.add(gi[:, : 2 * hidden], gh[:, : 2 * hidden], out=rz[t]).sigmoid_()
            torch.add(gh[:, 2 * hidden :], b_hn, out=hn[t])
            r, z = rz[t, :, :hidden], rz[t, :, hidden:]
            n = torch.addcmul(gi[:, 2 * hidden :], r, hn[t]).tanh_()
            torch.lerp(n, hs[t], z, out=hs[t + 1])
        ctx.save_for_backward(x1, w_ih1_t, w_ih, w_hh, hs, rz, hn)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        return hs[1:].transpose(0, 1), hs[steps].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        x1, w_ih1_t, w_ih, w_hh, hs, rz, hn = ctx.saved_tensors
        steps, batch, hidden = hn.shape
        x1 = x1.view(steps * batch, -1)  # the inputs and a column of ones, time-major
        chunk = min(steps, max(1, CHUNK_ROWS // batch))  # 4 steps at batch 512
        # per chunk of steps: gh = d(W_hh h + b_hh), i.e. d(pre-activation) of r and z, and
        # d(W_hn h + b_hn) = dn * r; dn = d(pre-activation) of n, the input side's third part.
        # The weight gradients are summed chunk by chunk; x1's column of ones gives b_ih's
        # gradient (and b_hr's, b_hz's) in the same product as W_ih's, kept transposed
        # (x1^T g: 1.2x faster than g^T x1 here).
        gh = x1.new_empty(chunk, batch, 3 * hidden)
        # n's input projection, for n again; then, in place, dn = d(pre-activation) of n
        dns = x1.new_empty(chunk, batch, hidden)
        w_in1_t = w_ih1_t[:, 2 * hidden :]  # n's input weights and b_in, as forward used them
        grad_x = x1.new_empty(steps, batch, x1.shape[1] - 1)
        grad_w_ih1_t = x1.new_empty(x1.shape[1], 3 * hidden)
        grad_w_hh, grad_b_hn = torch.empty_like(w_hh), w_hh.new_zeros(hidden)
        ones = x1.new_ones(chunk * batch)  # column sums as products (b_hn's gradient)
        if grad_last is not None:
            dh = grad_last.clone(memory_format=torch.contiguous_format)
        else:
            dh = x1.new_zeros(batch, hidden)
        library = (
            native.kernels() if dh.device.type == "cpu" and dh.dtype == torch.float32 else None
        )
        grad_out = None if grad_out is None else grad_out.transpose(0, 1)
        rz_rows = slice(0, 2 * hidden)
        back = packed_product(native.transposed(library, w_hh), batch)  # g -> g @ W_hh
        if back is None:

            def back(g):
                return torch.mm(g, w_hh)

        through = None  # with the kernels: g @ W_hh of the step after, not yet added to dh
        kernel = (
            None if library is None else native.backward_steps(library, dh, rz, hn, hs, dns, gh)
        )
        chunk_grads = gh.unbind(0)
        for end in range(steps, 0, -chunk):
            begin = max(end - chunk, 0)
            rows = (end - begin) * batch
            x_rows = x1[begin * batch : end * batch]
            torch.mm(x_rows, w_in1_t, out=dns[: end - begin].view(rows, hidden))
            for t in range(end - 1, begin - 1, -1):
                if kernel is not None:  # the step's element-wise work in one pass
                    out_t = None if grad_out is None else grad_out[t].contiguous()
                    kernel(t, t - begin, through, out_t)
                    through = back(chunk_grads[t - begin])  # dh now holds dh * z
                    continue
                if grad_out is not None:
                    dh += grad_out[t]
                r, z = rz[t, :, :hidden], rz[t, :, hidden:]
                h, i = hs[t], t - begin
                n = torch.addcmul(dns[i], r, hn[t]).tanh_()  # as forward computed it
                dr, dz, d_hn = gh[i].split(hidden, dim=1)
                dn, one_minus_z = dns[i], 1 - z
                torch.mul(dh, one_minus_z, out=dn)  # through the lerp, then the tanh:
                dn.addcmul_(dn * n, n, value=-1)  # dn (1 - n^2)
                torch.mul(dh, h - n, out=dz).mul_(z * one_minus_z)
                torch.mul(dn, hn[t], out=dr).mul_(torch.addcmul(r, r, r, value=-1))  # r (1 - r)
                torch.mul(dn, r, out=d_hn)
                dh = back(gh[i]).addcmul_(dh, z)  # one product for r, z and n
            flat = gh[: end - begin].view(rows, 3 * hidden)
            flat_n = dns[: end - begin].view(rows, hidden)
            h_prev = hs[begin:end].reshape(rows, hidden)
            first = end == steps  # the first chunk writes the sums, the others add to them
            _accumulate(grad_w_hh, flat.t(), h_prev, first)
            grad_b_hn.addmv_(flat[:, 2 * hidden :].t(), ones[:rows])
            # the input side: r and z as above, n from dn
            grad_x_rows = grad_x[begin:end].view(rows, -1)
            torch.mm(flat[:, rz_rows], w_ih[rz_rows], out=grad_x_rows)
            grad_x_rows.addmm_(flat_n, w_ih[2 * hidden :])
            _accumulate(grad_w_ih1_t[:, rz_rows], x_rows.t(), flat[:, rz_rows], first)
            _accumulate(grad_w_ih1_t[:, 2 * hidden :], x_rows.t(), flat_n, first)
        if through is not None:
            dh += through
        grad_w_ih = grad_w_ih1_t[:-1].t().contiguous()
        grad_b_ih = grad_w_ih1_t[-1].clone()  # the ones column's row
        grad_b_hh = torch.cat([grad_b_ih[rz_rows], grad_b_hn])
        return grad_x.transpose(0, 1), dh, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def _accumulate(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """out = a @ b if first, else out += a @ b."""
    if first:
        torch.mm(a, b, out=out)
    else:
        out.addmm_(a, b)


def gru_sequence(gru: nn.GRU, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output (batch, steps, hidden), h_n (1, batch, hidden)) of a one-layer, unidirectional,
    batch-first ``gru`` with biases, starting from zeros; same values as ``gru(x)``."""
    h0 = x.new_zeros(x.shape[0], gru.hidden_size)
    out, last = _GRUSequence.apply(
        x, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    )
    return out, last.unsqueeze(0)


def supports_fused(gru: nn.GRU) -> bool:
    return gru.num_layers == 1 and not gru.bidirectional and gru.batch_first and gru.bias
