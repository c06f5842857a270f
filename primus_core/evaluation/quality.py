"""The cost of a faster inference path (bf16, int8) in accuracy: what `primus bench` reports
next to its speed."""

from __future__ import annotations

import torch

QUALITY_MODEL = "primus-hapt-stackrnn"  # a shipped zoo model: no download
QUALITY_DATASET = "watch-exercises"


def measure_quality(batch: int, device: torch.device, seconds: float, variant: str) -> dict:
    """The cost of a faster inference path: max and mean cosine distance of its embeddings to
    fp32 on every window of watch-exercises, and the change in its 5-shot linear accuracy (same
    seeds and splits), with the shipped primus-hapt-stackrnn model."""
    from ..data.embed import embed_windows
    from .protocol import EvalSettings, evaluate, load_model, prepare_dataset

    loaded = load_model(QUALITY_MODEL)
    ws = prepare_dataset(QUALITY_DATASET, loaded.encoder.imu_contract, False)
    ref = torch.from_numpy(embed_windows(loaded.encoder, ws.imu, batch_size=batch, device=device))
    got = torch.from_numpy(
        embed_windows(loaded.encoder, ws.imu, batch_size=batch, device=device, dtype=variant)
    )
    distance = 1 - torch.nn.functional.cosine_similarity(ref, got, dim=1)
    accuracy = {}
    for dtype in ("fp32", variant):
        settings = EvalSettings(
            dataset=QUALITY_DATASET, shots=[5], seeds=3, device=str(device), dtype=dtype
        )
        result = evaluate(loaded, settings, baselines=(), progress=False, windows=ws)
        accuracy[dtype] = float(result.summary[0]["accuracy_mean"])
    return {
        "variant": variant,
        "windows": len(ws),
        "max_cosine_distance": float(distance.max()),
        "mean_cosine_distance": float(distance.mean()),
        "accuracy_5shot": accuracy[variant],
        "accuracy_5shot_fp32": accuracy["fp32"],
        "accuracy_5shot_change": accuracy[variant] - accuracy["fp32"],
    }
