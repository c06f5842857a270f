"""The full PRIMUS step (bench's synthetic run) at one batch size, alternating step by step
between the CPU GRU path of primus_stackrnn (hand-written backward) and torch.nn.GRU.

    OMP_NUM_THREADS=2 taskset -c 0,1 python benchmarks/gru_paired_steps.py 256 6
"""

import json
import sys
import time

import torch

import primus_stackrnn.encoder as enc
from primus_core.training.bench import matmul_gflops, synthetic_run

batch, rounds = int(sys.argv[1]), int(sys.argv[2])
dev = torch.device("cpu")
model, augs, source = synthetic_run(batch, dev, windows=1024)
opt = torch.optim.Adam(model.parameters(), lr=2e-4)
gen = torch.Generator().manual_seed(0)


def step():
    x, teachers, masks, labels = source.batch(torch.randint(0, len(source), (batch,)))
    xa = x
    for a in augs:
        xa = a(xa, gen)
    total, _ = model(x, xa, teachers, masks, labels, gather=False)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


real = enc.supports_fused
times = {"fused": [], "torch": []}
gf = []
for r in range(rounds + 1):
    for name in ("fused", "torch"):
        enc.supports_fused = real if name == "fused" else (lambda g: False)
        s = time.perf_counter()
        step()
        dt = time.perf_counter() - s
        if r:
            times[name].append(dt)
    gf.append(matmul_gflops(dev, 0.3))
med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
print(
    json.dumps(
        {
            "batch": batch,
            "step_s": times,
            "median_s": med,
            "torch_over_fused_median": med["torch"] / med["fused"],
            "paired_ratios": [a / b for a, b in zip(times["torch"], times["fused"], strict=True)],
            "matmul_gflops_between_rounds": gf,
        }
    )
)
