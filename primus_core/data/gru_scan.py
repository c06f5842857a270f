"""The forward pass of a ``torch.nn.GRU`` for inference on CPUs, step by step with few operators.

``torch.nn.GRU`` on a CPU computes the input projection of every step at once (at batch 256 and 32
steps a 50 MB tensor written and read back) and about 20 operators per step. ``gru_scan`` projects
each step's input where it is used (it stays in cache) and does the step's element-wise work in
one compiled kernel (``primus_core.native``; 5 torch operators where it cannot be built); the
gates and the state stay in float32 whatever the weights' precision, so only the products
change with it:
- float32 weights: float32 products (the same values as ``nn.GRU``, to rounding);
- bfloat16 weights, or ``Bf16GRU``: the products in bfloat16 (AMX or AVX-512 BF16 where the
  CPU has them), the input projection of all steps in one product;
- ``Int8GRU``: the recurrent product int8 dynamically quantised (weights per output row,
  the state per step), through oneDNN where torch has it.

Gates follow torch.nn.GRU (r, z, n order):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(... z ...)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h = lerp(n, h, z)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from .. import native


def scannable(gru: nn.Module) -> bool:
    """Whether ``gru_scan`` computes this module's forward: a one-layer, unidirectional
    ``nn.GRU`` with biases."""
    return isinstance(gru, nn.GRU) and gru.num_layers == 1 and not gru.bidirectional and gru.bias


@torch.no_grad()
def scan(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    recurrent: Callable[[torch.Tensor], torch.Tensor],
    batch_first: bool,
    product_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, h_n) of a one-layer GRU from zeros, in ``x``'s dtype. ``recurrent(h)`` is
    W_hh h + (0, 0, b_hn) (see ``recurrent_bias``), in float32 or bfloat16, for the state in
    ``product_dtype``: by default the compute precision, float32 (float64 for a float64
    ``x``), in which the gates and the state ``h`` are kept; bfloat16 runs the input
    projection in bfloat16 too. Each step's element-wise work runs in one compiled kernel
    where ``primus_core.native`` has one, else as torch operators."""
    dtype = x.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    product_dtype = product_dtype or compute
    x = x.to(compute)
    if batch_first:
        x = x.transpose(0, 1)
    steps, batch, _ = x.shape
    hidden = b_hh.shape[0] // 3
    x1 = with_ones(x).to(product_dtype).contiguous()  # (steps, batch, features + 1): small
    project = input_projections(
        x1, input_weights_with_biases(w_ih.to(compute), b_ih, b_hh), product_dtype
    )
    hs = x.new_empty(steps + 1, batch, hidden)  # hs[t]: the state before step t
    hs[0].zero_()
    library = native.kernels() if x.device.type == "cpu" and compute == torch.float32 else None
    if library is not None:  # the state in the products' precision written by the kernel too
        state = (
            None if product_dtype == compute else hs.new_zeros(batch, hidden, dtype=product_dtype)
        )
        for t in range(steps):
            gh = recurrent(hs[t] if state is None else state)
            native.forward_step(library, project(t), gh, None, hs[t], hs[t + 1], state)
    else:
        for t in range(steps):
            gi = project(t).to(compute)
            gh = recurrent(hs[t].to(product_dtype)).to(compute)
            rz = gi[:, : 2 * hidden].add_(gh[:, : 2 * hidden]).sigmoid_()
            n = torch.addcmul(gi[:, 2 * hidden :], rz[:, :hidden], gh[:, 2 * hidden :])
            torch.lerp(n.tanh_(), hs[t], rz[:, hidden:], out=hs[t + 1])
    output = hs[1:].transpose(0, 1) if batch_first else hs[1:]
    # h_n copied: as a view it would keep every state alive as long as the caller keeps it
    # (17 MB per batch of 256 at hidden 512; `primus embed` kept one per batch)
    return output.to(dtype), hs[steps].to(dtype, copy=True).unsqueeze(0)


ALL_STEPS_BYTES = 32 << 20  # up to this size, the input projection of all steps in one product


def input_projections(
    x1: torch.Tensor, w_ih1_t: torch.Tensor, dtype: torch.dtype
) -> Callable[[int], torch.Tensor]:
    """t -> step t's input projection x1[t] @ w_ih1_t, (batch, 3 hidden) in ``dtype``, for a
    contiguous x1 (steps, batch, features + 1). All steps in one product where the result
    takes at most ``ALL_STEPS_BYTES`` (the training step at batch 64: 1.05x, 10 paired
    rounds) and always in bfloat16 (25 MB at batch 256; 2.7x faster than step by step: the
    per-step product, with 33 inputs, is too small for the bfloat16 kernels). Otherwise each
    step's where it is used: all steps at once would write 50 MB of fresh pages per call at
    batch 256 in float32 (4.7x slower here). Never packed: MKL's packed copy of these
    (features + 1, 3 hidden) weights takes 10 MiB, for no gain at 32-512 rows."""
    steps, batch, width = x1.shape
    w = w_ih1_t.to(dtype).contiguous()  # (features + 1, 3 hidden)
    size = steps * batch * w.shape[1] * w.element_size()
    if dtype == torch.bfloat16 or size <= ALL_STEPS_BYTES:
        every = torch.mm(x1.view(-1, width), w).view(steps, batch, -1)
        return every.__getitem__
    return lambda t: torch.mm(x1[t], w)


def gru_scan(gru: nn.GRU, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``gru(x)`` without gradients, for a ``scannable`` GRU and a batched input, (batch, steps,
    features) or (steps, batch, features) as the module expects; the products run in the
    weights' precision (float32 or bfloat16), the gates in float32."""
    w_hh, bias = gru.weight_hh_l0.detach(), recurrent_bias(gru.bias_hh_l0.detach())
    batch = x.shape[0 if gru.batch_first else 1]
    return scan(
        x,
        gru.weight_ih_l0,
        gru.bias_ih_l0,
        gru.bias_hh_l0,
        recurrent_product(w_hh, batch, bias),
        gru.batch_first,
        product_dtype=torch.bfloat16 if w_hh.dtype == torch.bfloat16 else None,
    )


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a column of ones after its last dimension's entries."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


def input_weights_with_biases(
    w_ih: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """(features + 1, 3 hidden) weights: ``with_ones(x) @`` them is W_ih x + b_ih + (b_hr, b_hz,
    0), the input projection with every bias but b_hn (see ``recurrent_bias``), in one product."""
    bias = b_ih.to(w_ih.dtype, copy=True)
    bias[: 2 * (b_hh.shape[0] // 3)] += b_hh[: 2 * (b_hh.shape[0] // 3)].to(w_ih.dtype)
    return torch.cat([w_ih, bias[:, None]], dim=1).t()


def recurrent_product(
    w_hh: torch.Tensor, batch: int, bias: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """h -> W_hh h + bias in ``w_hh``'s precision: packed for ``batch`` rows where the library
    is there (``packed_product``), else addmm."""
    product = packed_product(w_hh, batch, bias)
    if product is not None:
        return product
    w_hh_t = w_hh.t()
    return lambda h: torch.addmm(bias, h, w_hh_t)


def recurrent_bias(b_hh: torch.Tensor) -> torch.Tensor:
    """The bias the recurrent product adds: b_hn only (0 for r and z, whose W_hh biases join
    the input projection's), since r multiplies W_hn h + b_hn."""
    bias = b_hh.clone()
    bias[: 2 * (b_hh.shape[0] // 3)] = 0
    return bias


def packed_product(
    w: torch.Tensor, batch: int, bias: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """h -> h @ w.T (+ bias) in ``w``'s precision (float32 or bfloat16; ``h`` too), with ``w``
    packed once for ``batch`` rows (the product then skips re-packing w on every step):
    MKL's GEMM for float32, oneDNN's for bfloat16; None where this torch lacks the library."""
    if w.device.type != "cpu":
        return None
    try:
        if w.dtype == torch.float32 and torch.backends.mkl.is_available():
            packed = torch.ops.mkl._mkl_reorder_linear_weight(w, batch)
            return lambda h: torch.ops.mkl._mkl_linear(h, packed, w, bias, batch)
        if w.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, batch)
            linear = torch.ops.mkldnn._linear_pointwise
            return lambda h: linear(h, packed, bias, "none", [], "")
    except (AttributeError, RuntimeError):
        pass
    return None


def _quantised_engine() -> str:
    """oneDNN's int8 products where this torch has them (AMX and VNNI kernels), else the default."""
    engines = torch.backends.quantized.supported_engines
    return "onednn" if "onednn" in engines else torch.backends.quantized.engine


class _ScanGRU(nn.Module):
    """A ``scannable`` nn.GRU for CPU inference, called as the nn.GRU it replaces (inputs from
    zeros only), whose recurrent product a subclass supplies (``_recurrent``). Weights packed
    for a product are made on first use, in this process: a copy or a pickle packs its own
    (packed weights restored by torch can take another engine's slower kernels)."""

    product_dtype: torch.dtype | None = None  # the products' precision; None: float32

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if not scannable(gru):
            raise ValueError(
                f"{type(self).__name__} needs a one-layer, unidirectional nn.GRU with biases"
            )
        self.batch_first = gru.batch_first
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            self.register_buffer(name, getattr(gru, name).detach().float().clone())
        self._packed = None

    def __getstate__(self):
        return {**super().__getstate__(), "_packed": None}

    def _recurrent(self, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        if h0 is not None:
            raise ValueError(f"{type(self).__name__} starts from zeros (h0 must be None)")
        recurrent = self._recurrent(x.shape[0 if self.batch_first else 1])
        return scan(
            x,
            self.weight_ih_l0,
            self.bias_ih_l0,
            self.bias_hh_l0,
            recurrent,
            self.batch_first,
            self.product_dtype,
        )


class Bf16GRU(_ScanGRU):
    """A GRU whose products, the input projection and W_hh h (94 % of a GRU's multiply-adds at
    PRIMUS's shapes), run in bfloat16 (AMX or AVX-512 BF16 where the CPU has them), W_hh packed
    once per batch size; the gates and the state stay float32."""

    product_dtype = torch.bfloat16

    def _recurrent(self, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
        self._packed = self._packed or {}
        if batch not in self._packed:
            bias = recurrent_bias(self.bias_hh_l0).bfloat16()
            self._packed[batch] = recurrent_product(self.weight_hh_l0.bfloat16(), batch, bias)
        return self._packed[batch]


class Int8GRU(_ScanGRU):
    """A GRU whose recurrent product (W_hh h) is int8 dynamically quantised: W_hh per output
    row, the state per step, through oneDNN's kernels where torch has them."""

    def __init__(self, gru: nn.GRU):
        super().__init__(gru)
        self.engine = _quantised_engine()

    def _pack(self):
        w_hh = self.weight_hh_l0
        scale = (w_hh.abs().amax(dim=1) / 127).clamp_min(1e-12)
        engine = torch.backends.quantized.engine
        with warnings.catch_warnings():  # quantised tensors announce their move to torchao
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            if self.engine == "qnnpack":  # ARM's engine: one scale for the whole matrix
                q_hh = torch.quantize_per_tensor(w_hh, float(scale.max()), 0, torch.qint8)
            else:
                zero = torch.zeros(w_hh.shape[0], dtype=torch.long)
                q_hh = torch.quantize_per_channel(w_hh, scale, zero, 0, torch.qint8)
            torch.backends.quantized.engine = self.engine
            try:
                bias = recurrent_bias(self.bias_hh_l0)
                self._packed = torch.ops.quantized.linear_prepack(q_hh, bias)
            finally:
                torch.backends.quantized.engine = engine
        return self._packed

    def _recurrent(self, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
        packed = self._packed if self._packed is not None else self._pack()
        reduce_range = self.engine != "onednn"  # fbgemm's int8 products need 7-bit inputs

        def recurrent(h: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(h, packed, reduce_range)

        return recurrent
