"""The encoder's CPU inference at batch 256 through torch's GRU paths and through primus's
(primus_core/data/gru_scan.py), timed round by round in one process: in each round every path
runs back to back, and each ratio is the median of the rounds' ratios.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gru_inference_paths.py [ROUNDS] [OUT.json]

torch's paths: nn.GRU in float32, nn.GRU in bfloat16, torch.ao quantize_dynamic's int8 GRU.
primus's paths: for_inference(encoder, "fp32" | "bf16" | "int8").
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
import warnings

import torch

import primus_stackrnn.encoder as encoder_module
from primus_core.components import create
from primus_core.data.embed import InferenceEncoder, for_inference


def torch_paths(encoder) -> dict:
    """The encoder as it ran before primus's scan: every GRU call goes to the module itself."""
    from torch.ao.quantization import quantize_dynamic

    bf16 = InferenceEncoder(copy.deepcopy(encoder).to(torch.bfloat16), torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = quantize_dynamic(copy.deepcopy(encoder), {torch.nn.GRU, torch.nn.Linear})
    return {"fp32": encoder, "bf16": bf16.eval(), "int8": InferenceEncoder(int8, torch.float32)}


def seconds_per_call(fn, calls: int = 4) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main(rounds: int = 5, out: str | None = None) -> dict:
    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn").eval()
    x = torch.randn(256, 6, 250)
    theirs = torch_paths(encoder)
    ours = {d: for_inference(encoder, d) for d in ("fp32", "bf16", "int8")}
    scannable = encoder_module.scannable
    times: dict[str, list[float]] = {}
    with torch.no_grad():
        for _ in range(rounds):
            encoder_module.scannable = lambda gru: False  # the encoder calls its GRU module
            for d, model in theirs.items():
                times.setdefault(f"torch {d}", []).append(seconds_per_call(lambda m=model: m(x)))
            encoder_module.scannable = scannable
            for d, model in ours.items():
                times.setdefault(f"primus {d}", []).append(seconds_per_call(lambda m=model: m(x)))

    def ratio(a: str, b: str) -> float:
        return statistics.median(p / q for p, q in zip(times[a], times[b], strict=True))

    result = {
        "threads": torch.get_num_threads(),
        "windows_per_s": {k: 256 / statistics.median(v) for k, v in times.items()},
        "primus over torch": {d: ratio(f"torch {d}", f"primus {d}") for d in ours},
        "over primus fp32": {d: ratio("primus fp32", f"primus {d}") for d in ("bf16", "int8")},
        "over torch fp32": {
            f"primus {d}": ratio("torch fp32", f"primus {d}") for d in ("fp32", "bf16", "int8")
        },
    }
    print(json.dumps(result, indent=1))
    if out:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5, sys.argv[2] if len(sys.argv) > 2 else None)
