"""``nn``: the cross-modal nearest-neighbour objective of PRIMUS (NNCLR-like), with FIFO queues.

State (module buffers, so checkpoints hold them):
- ``queue_<m>`` (N, D_m) for each teacher modality m and ``queue_imu`` (N, D_ssl): L2-normalised
  embeddings of past windows (the IMU queue holds detached ssl outputs);
- ``has_<m>`` (N,) bool: the window in that slot had modality m;
- ``queue_ptr`` (next slot to write) and ``queue_count`` (filled slots, at most N).
Queues are allocated on the first batch (their widths come from the data) and resized on
``load_state_dict``; a fresh module loads any checkpoint of the same configuration.

Lookup, for the whole batch (no loop over windows): each window searches with its video embedding among the
queue slots that have video; a window without video (or while no slot has video yet) searches
with its text embedding among the slots that have text (in general: the first modality of
``video, text, <others in config order>`` that the window has and the queue holds). Similarity is
cosine; the neighbour is the top-1 slot. With nn the neighbour's slot:
    L_NN = (1 - c) * sum_m InfoNCE_mm(mmcl(x), Q_m[nn]) + c * InfoNCE_ss(ssl(x), Q_imu[nn])
masked to the windows that found a neighbour (and, for Q_m, whose neighbour has m). While the
queue is empty every mask is empty and the loss is exactly 0. The queue is updated after the
lookup, in training mode only (evaluation looks up but never writes). Under torch.distributed the
queues receive the embeddings of every rank (all_gather; the batch sizes of all ranks must be
equal, which the trainer guarantees), unless the trainer already gathered the batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from primus_core.errors import ComponentError

from .batch import StepBatch
from .config import NNConfig
from .objectives import attached_zero, check_teacher_size, head_output

LOOKUP_PREFERENCE = ("video", "text")


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 from every rank (equal sizes), no gradient."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class NearestNeighbourLoss(nn.Module):
    """L_NN = (1 - c) * sum_m InfoNCE(mmcl(x), Q_m[nn]) + c * InfoNCE(ssl(x), Q_imu[nn])."""

    needs_augmented_view = False
    needs_labels = False
    infonce_slots = {"multimodal": "mm_infonce", "self-supervised": "ss_infonce"}

    def __init__(self, config: NNConfig | None = None):
        super().__init__()
        self.config = config or NNConfig()
        self.modalities: tuple[str, ...] = tuple(self.config.modalities)
        self.lookup_order = tuple(m for m in LOOKUP_PREFERENCE if m in self.modalities) + tuple(
            m for m in self.modalities if m not in LOOKUP_PREFERENCE
        )
        self.mm_infonce = self.config.infonce()
        self.ss_infonce = self.config.infonce()
        self._resizable = {"queue_imu"}
        for modality in self.modalities:
            self.register_buffer(f"queue_{modality}", torch.zeros(0))
            self.register_buffer(f"has_{modality}", torch.zeros(0, dtype=torch.bool))
            self._resizable |= {f"queue_{modality}", f"has_{modality}"}
        self.register_buffer("queue_imu", torch.zeros(0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------ queue state
    @property
    def size(self) -> int:
        return self.config.queue_size

    def queue(self, name: str) -> torch.Tensor:
        return self._buffers[f"queue_{name}"]

    def has(self, modality: str) -> torch.Tensor:
        return self._buffers[f"has_{modality}"]

    def _allocate(self, name: str, shape: tuple[int, ...], device: torch.device) -> None:
        """Give an empty buffer its shape, in place when it is on the right device (so that a
        DDP wrapper holding the buffer keeps seeing it)."""
        buf = self._buffers[name]
        if tuple(buf.shape) == shape:
            return
        if buf.numel() != 0:
            self._check_shape(name, shape)
        if buf.device == device:
            buf.resize_(shape).zero_()
        else:
            self._buffers[name] = torch.zeros(shape, dtype=buf.dtype, device=device)

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """A filled buffer keeps its shape: a batch that needs another is one clear error."""
        have = tuple(self._buffers[name].shape)
        if have != shape:
            raise ComponentError(
                f"loss 'nn': {name} is {have} but this batch needs {shape} "
                "(embedding sizes changed)"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._resizable:
            incoming = state_dict.get(prefix + name)
            buf = self._buffers[name]
            if incoming is not None and incoming.shape != buf.shape:
                buf.resize_(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def filled(self) -> torch.Tensor:
        """(N,) bool: slots written at least once (the ring fills slots 0, 1, ... in order)."""
        return torch.arange(self.size, device=self.queue_count.device) < self.queue_count

    # ------------------------------------------------------------ lookup
    @torch.no_grad()
    def lookup(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(nn index (B,), found (B,) bool) for the whole batch: per lookup modality, in order of
        preference, one matrix product of the batch against the queue; rows that already found a
        neighbour keep it. Static shapes, no host sync (the step can be captured in a CUDA graph)."""
        rows = batch.size
        device = self.queue_count.device
        index = torch.zeros(rows, dtype=torch.long, device=device)
        found = torch.zeros(rows, dtype=torch.bool, device=device)
        filled = self.filled()
        for modality in self.lookup_order:
            if modality not in batch.teachers or self.queue(modality).numel() == 0:
                continue
            usable = filled & self.has(modality)
            row_has = batch.teacher_mask.get(modality)
            if row_has is None:
                row_has = torch.ones(rows, dtype=torch.bool, device=device)
            take = row_has.to(device=device, dtype=torch.bool) & ~found & usable.any()
            query = F.normalize(batch.teachers[modality].detach().to(device).float(), dim=1)
            queue = self.queue(modality)
            self._check_shape(f"queue_{modality}", (queue.shape[0], query.shape[1]))
            sim = (query @ queue.T).masked_fill(~usable, float("-inf"))
            index = torch.where(take, sim.argmax(dim=1), index)
            found = found | take
        return index, found

    # ------------------------------------------------------------ update
    @torch.no_grad()
    def enqueue(self, batch: StepBatch) -> None:
        ssl = head_output(batch.imu, "ssl", "nn")
        device = self.queue_count.device
        rows = {"imu": F.normalize(ssl.detach().float(), dim=1)}
        masks: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            if modality in batch.teachers:
                rows[modality] = F.normalize(batch.teachers[modality].detach().float(), dim=1)
                mask = batch.teacher_mask.get(modality)
                masks[modality] = (
                    torch.ones(batch.size, dtype=torch.bool, device=ssl.device)
                    if mask is None
                    else mask.to(ssl.device, torch.bool)
                )
        if not batch.gathered and distributed():
            rows = {k: gather_rows(v) for k, v in rows.items()}
            masks = {k: gather_rows(v) for k, v in masks.items()}
        count = rows["imu"].shape[0]
        keep = min(count, self.size)  # a batch larger than the queue keeps its last rows
        slots = (self.queue_ptr + torch.arange(keep, device=device)) % self.size
        self._allocate("queue_imu", (self.size, rows["imu"].shape[1]), device)
        self.queue("imu")[slots] = rows["imu"][count - keep :].to(device)
        for modality in self.modalities:
            if modality in rows:
                self._allocate(f"queue_{modality}", (self.size, rows[modality].shape[1]), device)
                self._allocate(f"has_{modality}", (self.size,), device)
                self.queue(modality)[slots] = rows[modality][count - keep :].to(device)
                self.has(modality)[slots] = masks[modality][count - keep :].to(device)
            elif self.has(modality).numel():
                self.has(modality)[slots] = False
        self.queue_ptr.copy_((self.queue_ptr + keep) % self.size)
        self.queue_count.copy_(torch.clamp(self.queue_count + keep, max=self.size))

    # ------------------------------------------------------------ loss
    def forward(self, batch: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mmcl = head_output(batch.imu, "mmcl", "nn")
        ssl = head_output(batch.imu, "ssl", "nn")
        index, found = self.lookup(batch)
        multimodal = attached_zero(mmcl)
        terms: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            queue = self.queue(modality)
            if queue.numel() == 0:
                continue
            positives = queue[index].to(mmcl.device)
            check_teacher_size(mmcl, positives, "nn", modality)
            mask = (found & self.has(modality)[index]).to(mmcl.device)
            value = self.mm_infonce(mmcl, positives, mask)
            multimodal = multimodal + value
            terms[modality] = value.detach()
        if self.queue("imu").numel():
            imu_positives = self.queue("imu")[index].to(ssl.device)
            self_supervised = self.ss_infonce(ssl, imu_positives, found.to(ssl.device))
        else:
            self_supervised = attached_zero(ssl)
        terms["imu"] = self_supervised.detach()
        terms["found"] = found.float().mean()
        c = self.config.ssl_coeff
        total = (1.0 - c) * multimodal + c * self_supervised
        if self.training:
            self.enqueue(batch)
        return total, terms
