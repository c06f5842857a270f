import numpy as np
import pytest
import torch

from primus_core.cli.bench import bench_plan, report
from primus_core.components import create
from primus_core.data.embed import embed_windows, for_inference
from primus_core.errors import DataError
from primus_core.training.bench import check_targets, matmul_gflops, run_one


def cpu_rows(step256: float, fp32: float, bf16: float, int8: float, peak: float) -> list[dict]:
    return [
        {"measure": "step", "batch": 16, "variant": "eager", "windows_per_s": 320.0},
        {
            "measure": "step",
            "batch": 256,
            "variant": "eager",
            "windows_per_s": step256,
            "of_compute_bound": step256 / 500,
            "peak_mib": 700.0 + peak,
            "baseline_mib": 700.0,
        },
        {
            "measure": "inference",
            "batch": 256,
            "variant": "fp32",
            "windows_per_s": fp32,
            "of_compute_bound": fp32 / 3000,
        },
        {"measure": "inference", "batch": 256, "variant": "bf16", "windows_per_s": bf16},
        {"measure": "inference", "batch": 256, "variant": "int8", "windows_per_s": int8},
    ]


def test_targets_are_checked_against_the_figures():
    met = dict(check_targets(torch.device("cpu"), cpu_rows(450, 2800, 6000, 5700, 250), {}))
    assert all(met.values()) and len(met) == 7
    missed = dict(check_targets(torch.device("cpu"), cpu_rows(390, 2000, 3000, 4100, 400), {}))
    assert [t for t, ok in missed.items() if ok] == [
        "step at batch 16 >= 300 windows/s",
        "int8 inference at batch 256 >= 2x fp32",
    ]
    gpu_rows = [
        {"measure": "step", "batch": 16, "variant": "graph", "windows_per_s": 6000.0},
        {"measure": "step", "batch": 256, "variant": "graph", "windows_per_s": 50000.0},
    ]
    gpu = dict(check_targets(torch.device("cuda"), gpu_rows, {"egoexo4d_epoch_s_batch16": 32.5}))
    assert gpu == {
        "graph step at batch 16 >= 5,000 windows/s": True,
        "graph step at batch 256 >= 60,000 windows/s": False,
        "EgoExo4D epoch at batch 16 under 40 s": True,
    }


def test_plan_and_report_name_every_variant():
    assert ("inference", 256, "int8") in bench_plan("cpu", quality=True)
    assert ("step", 16, "graph") in bench_plan("cuda", quality=False)
    assert not any(kind == "quality" for kind, _, _ in bench_plan("cpu", quality=False))
    rows = cpu_rows(450, 2800, 6000, 5700, 250)
    for row in rows:
        row.setdefault("peak_mib", 800.0)
        row.setdefault("baseline_mib", 700.0)
    rows[1]["profile"] = {"GRU forward": 0.3, "backward": 0.7}
    rows.append({"measure": "quality", "batch": 256, "variant": "int8", "error": "no data"})
    summary = {
        "device": "cpu",
        "gpu": None,
        "threads": 2,
        "matmul_gflops": 160.0,
        "macs_per_window": 27_000_000,
        "step_ceiling_windows_per_s": 500.0,
        "inference_ceiling_windows_per_s": 3000.0,
        "egoexo4d_epoch_s": 400.0,
        "egoexo4d_epoch_s_batch16": 600.0,
        "rows": rows,
        "targets": [{"target": "x", "met": False}],
    }
    text = report(summary)
    assert "2.14x" in text and "GRU forward 30%" in text and "target MISSED: x" in text
    assert "int8 vs fp32: not measured (no data)" in text


def test_measurements_run_in_their_own_process():
    assert matmul_gflops(torch.device("cpu"), seconds=0.2) > 0
    result = run_one("inference", 4, "cpu", 0.1, "int8")
    assert result["windows_per_s"] > 0 and result["peak_mib"] >= result["baseline_mib"] > 0


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_faster_inference_paths_stay_close_to_fp32(dtype):
    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn", hidden_size=64, ssl_dim=32, mmcl_dim=32)
    windows = np.random.default_rng(0).normal(size=(6, 6, 250)).astype(np.float32)
    ref = embed_windows(encoder, windows, batch_size=4)
    got = embed_windows(encoder, windows, batch_size=4, dtype=dtype)
    assert got.dtype == np.float32 and got.shape == ref.shape
    cosine = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() > 0.95 and not np.array_equal(ref, got)
    assert next(encoder.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_unknown_dtype_is_refused():
    with pytest.raises(DataError, match="dtype must be one of"):
        for_inference(create("encoder", "stacked-rnn"), "fp8")
