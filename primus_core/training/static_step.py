"""The training step with static shapes and no host synchronisation (``train.step: static`` or
``graph``): forward, the losses (NN queues read and written inside, their pointer a tensor),
backward and the optimiser step, on fixed input buffers.

``static`` runs it eagerly (any device; the code path the CPU tests check against the eager
step). ``graph`` runs it eagerly for a few warm-up steps on a side stream, then captures it in a
CUDA graph once and replays the graph for every later step: one launch per step instead of
hundreds. Data loading and the augmentations run outside the step (they draw random numbers from
the trainer's generator); their results are copied into the step's input buffers.
"""

from __future__ import annotations

from typing import Any

import torch

WARMUP_STEPS = 3  # eager steps before a capture (the allocator and cuDNN settle; queues fill)


class StaticStep:
    """Call with one batch; returns the loss terms as 0-d tensors (read them before the next
    call: under a CUDA graph they are the graph's output buffers, overwritten by each replay)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        graph: bool,
    ):
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.amp_dtype = amp_dtype
        self.graph = graph
        self.calls = 0
        self.inputs: dict[str, Any] | None = None
        self.outputs: dict[str, torch.Tensor] | None = None
        self.cuda_graph: Any = None

    def body(self) -> dict[str, torch.Tensor]:
        """Forward, losses, backward, optimiser step on the input buffers (no host sync)."""
        b = self.inputs
        assert b is not None
        with torch.autocast(  # no weight-cast cache: a captured graph must recast every replay
            self.device.type,
            dtype=self.amp_dtype,
            enabled=self.amp_dtype is not None,
            cache_enabled=not self.graph,
        ):
            total, terms = self.model(
                b["x"], b["x_aug"], b["teachers"], b["masks"], b["labels"], False
            )
        total.backward()
        self.optimizer.step()
        return {"loss": total.detach(), **terms}

    def _fill(self, x, x_aug, teachers, masks, labels) -> None:
        """Copy the batch into the input buffers (allocated at the first call)."""
        batch = {"x": x, "x_aug": x_aug, "teachers": teachers, "masks": masks, "labels": labels}
        if self.inputs is None:
            self.inputs = _tree(batch, lambda t: t.clone())
            return
        _tree2(self.inputs, batch, lambda dst, src: dst.copy_(src, non_blocking=True))

    def __call__(self, x, x_aug, teachers, masks, labels) -> dict[str, torch.Tensor]:
        self._fill(x, x_aug, teachers, masks, labels)
        self.calls += 1
        if not self.graph:
            self.optimizer.zero_grad(set_to_none=True)
            return self.body()
        if self.cuda_graph is None and self.calls <= WARMUP_STEPS:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                self.optimizer.zero_grad(set_to_none=True)
                out = self.body()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            return out
        if self.cuda_graph is None:
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates the grads in the pool
            self.cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.cuda_graph):
                self.outputs = self.body()
        self.cuda_graph.replay()
        assert self.outputs is not None
        return self.outputs


def _tree(batch: dict[str, Any], fn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            out[key] = {k: fn(v) for k, v in value.items()}
        else:
            out[key] = None if value is None else fn(value)
    return out


def _tree2(dst: dict[str, Any], src: dict[str, Any], fn) -> None:
    for key, value in src.items():
        if isinstance(value, dict):
            for k, v in value.items():
                fn(dst[key][k], v)
        elif value is not None:
            fn(dst[key], value)
