"""The pretraining loop (CPU, GPU, DDP), the step batch, checkpoints and ``primus bench``'s
measurements."""
