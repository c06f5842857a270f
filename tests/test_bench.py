import torch

from primus_core.training.bench import check_targets, matmul_gflops, run_one


def test_targets_are_checked_against_the_figures():
    rows = [
        {
            "measure": "step",
            "batch": 256,
            "windows_per_s": 450.0,
            "of_compute_bound": 0.85,
            "peak_mib": 900.0,
        },
        {"measure": "inference", "batch": 256, "windows_per_s": 2500.0},
    ]
    result = dict(check_targets(torch.device("cpu"), rows, {}))
    assert result == {
        "step at batch 256 >= 400 windows/s": True,
        "step at batch 256 >= 80% of the compute bound": True,
        "peak memory of the step at batch 256 <= 1 GiB": True,
        "inference at batch 256 >= 3,000 windows/s": False,
    }
    assert check_targets(torch.device("cuda"), rows, {"egoexo4d_epoch_s": 6.0}) == [
        ("EgoExo4D epoch under 5 s", False)
    ]


def test_measurements_run_in_their_own_process():
    assert matmul_gflops(torch.device("cpu"), seconds=0.2) > 0
    result = run_one("inference", 4, "cpu", 0.1)
    assert result["windows_per_s"] > 0 and result["peak_mib"] >= result["baseline_mib"] > 0
