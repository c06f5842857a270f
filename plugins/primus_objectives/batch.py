"""``StepBatch``: what the trainer hands every loss at each step (docs/internals.md, "Loss").

The dataclass itself lives in the core (``primus_core.training.batch``) because the trainer builds it; it is
re-exported here so that loss plugins can import it from the objectives package as documented.
"""

from primus_core.training.batch import StepBatch

__all__ = ["StepBatch"]
