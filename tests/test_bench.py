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
    rows[1].update(matmul_gflops=225.4, matmul_gflops_range=[190.2, 261.7])
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
    assert "225 (190-262)" in text  # the step's bound: the samples' median and range


def test_measurements_run_in_their_own_process():
    assert matmul_gflops(torch.device("cpu"), seconds=0.2) > 0
    result = run_one("inference", 4, "cpu", 0.1, "int8")
    assert result["windows_per_s"] > 0 and result["peak_mib"] >= result["baseline_mib"] > 0
    assert result["matmul_gflops"] > 0  # the bound measured in that process, just before


def test_fp32_inference_times_the_other_precisions_against_it_in_one_process(monkeypatch):
    """The fp32 row carries bf16's and int8's speed-ups timed alternately in its process; the
    2x targets read them rather than the ratio of rows measured minutes apart."""
    from primus_core.training import bench as training_bench

    result = training_bench.measure_inference(4, torch.device("cpu"), 0.05, "fp32")
    assert set(result["paired_speedups"]) == {"bf16", "int8"}
    assert all(ratio > 0 for ratio in result["paired_speedups"].values())
    # round by round: the median of fp32's time over the variant's in the same round
    times = iter([2.0, 1.0, 1.0, 8.0, 4.0, 2.0, 3.0, 3.0, 1.0])  # (fp32, bf16, int8) x 3
    monkeypatch.setattr(training_bench, "timed", lambda *a, **k: next(times))
    got = training_bench.paired_speedups(2, torch.device("cpu"), 0.01, ["bf16", "int8"], 3)
    assert got == {"bf16": 2.0, "int8": 3.0}
    rows = cpu_rows(450, 2800, 2800 * 1.5, 2800 * 1.5, 250)  # the rows alone: 1.5x
    rows[2]["paired_speedups"] = {"bf16": 2.1, "int8": 1.9}
    met = dict(check_targets(torch.device("cpu"), rows, {}))
    assert met["bf16 inference at batch 256 >= 2x fp32"]
    assert not met["int8 inference at batch 256 >= 2x fp32"]


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


def test_markdown_row_of_a_known_summary_including_an_old_one_without_variants():
    from primus_core.cli.bench import MARKDOWN_HEADER, markdown_row

    rows = cpu_rows(450, 2800, 6000, 5600, 250)
    rows[1]["of_compute_bound"] = 0.9
    rows.append({"measure": "loading", "batch": 256, "variant": "", "windows_per_s": 12000.0})
    summary = {
        "gpu": None,
        "threads": 16,
        "matmul_gflops": 812.4,
        "step_ceiling_windows_per_s": 500.0,
        "rows": rows,
    }
    assert markdown_row(summary) == (
        "| 16 CPU threads, 812 GFLOP/s matmul | 320 | 450 | 90% of 500 | 250 MiB "
        "| 2,800 / 6,000 / 5,600 (2.14x, 2.00x of fp32) | 12,000 |"
    )
    assert markdown_row(summary).count("|") == MARKDOWN_HEADER.splitlines()[0].count("|")
    # a summary written before variants existed: step rows are eager, inference rows fp32
    old = {
        **summary,
        "gpu": "NVIDIA H200",
        "rows": [
            {"measure": "step", "batch": 16, "windows_per_s": 5200.0},
            {"measure": "step", "batch": 256, "windows_per_s": 61000.0, "peak_mib": 1500.0},
            {"measure": "step", "batch": 16, "variant": "graph", "windows_per_s": 9100.0},
            {"measure": "inference", "batch": 256, "windows_per_s": 250000.0},
        ],
    }
    assert markdown_row(old) == (
        "| NVIDIA H200, 812 GFLOP/s matmul | 5,200 (graph: 9,100) | 61,000 | - | 1,500 MiB "
        "| 250,000 / - / - (- of fp32) | - |"
    )


def test_bench_json_and_markdown_with_measurements_stubbed(cli, monkeypatch):
    """The command in process, each measurement replaced by a known figure: the plan is run, the
    share of the bound is windows/s / (GFLOP/s / (2 x MACs x 2 views x 3)), the EgoExo4D epoch
    is 195,000 windows / the best step rate, and --markdown prints the header and the row."""
    import json

    from primus_core.cli.bench import bench as bench_command
    from primus_core.cli.main import cli as root
    from primus_core.training import bench as training_bench

    root.add_command(bench_command)
    rates = {("step", 16): 350.0, ("step", 256): 480.0, ("inference", 256): 3000.0}
    measured = []

    def fake_run_one(kind, batch, device, seconds, variant):
        measured.append((kind, batch, variant))
        rate = rates.get((kind, batch), 9000.0) * (2 if variant in ("bf16", "int8") else 1)
        row = {"windows_per_s": rate, "peak_mib": 900.0, "baseline_mib": 700.0}
        if (kind, batch) == ("step", 16):  # the bound measured in its own process
            row["matmul_gflops"] = 50.0
        return row

    monkeypatch.setattr(training_bench, "run_one", fake_run_one)
    monkeypatch.setattr(training_bench, "matmul_gflops", lambda device, **kw: 100.0)
    res = cli("bench", "--device", "cpu", "--no-quality", "--seconds", "0.01", "--json")
    summary = json.loads(res.out)
    assert measured == bench_plan("cpu", quality=False)
    macs = summary["macs_per_window"]
    assert macs > 0 and summary["matmul_gflops"] == 100.0
    bound = 100.0e9 / (2 * macs * 2 * 3)
    step256 = next(r for r in summary["rows"] if (r["measure"], r["batch"]) == ("step", 256))
    assert step256["of_compute_bound"] == pytest.approx(480.0 / bound)
    step16 = next(r for r in summary["rows"] if (r["measure"], r["batch"]) == ("step", 16))
    assert step16["of_compute_bound"] == pytest.approx(350.0 / (bound / 2))
    assert summary["egoexo4d_epoch_s"] == pytest.approx(195_000 / 480.0)
    assert summary["egoexo4d_epoch_s_batch16"] == pytest.approx(195_000 / 350.0)
    targets = {t["target"]: t["met"] for t in summary["targets"]}
    assert targets["step at batch 16 >= 300 windows/s"] is True
    res = cli("bench", "--device", "cpu", "--no-quality", "--seconds", "0.01", "--markdown")
    assert "| device (what ran `primus bench`) |" in res.out
    assert "| 350 | 480 |" in res.out and "(2.00x, 2.00x of fp32)" in res.out


def test_quality_cost_is_cosine_distance_to_fp32_and_the_5_shot_accuracy_change(monkeypatch):
    """measure_quality on a tiny model and synthetic labelled windows (the shipped model and
    watch-exercises stubbed): the distances are 1 - cosine of the bf16 path's embeddings (the
    GRU's products in bfloat16, Bf16GRU) to fp32's, computed here by hand; the change is the
    bf16 5-shot accuracy minus fp32's."""
    import copy
    import functools

    from primus_core.data.gru_scan import Bf16GRU
    from primus_core.data.windows import WindowSet
    from primus_core.evaluation import protocol, quality

    encoder = protocol.untrained_encoder(
        "stacked-rnn", {"hidden_size": 32, "ssl_dim": 16, "mmcl_dim": 16}, seed=3
    )
    model = protocol.LoadedModel("tiny", encoder, "stacked-rnn", {}, [], "test")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    imu = (rng.normal(size=(120, 6, 250)) + labels[:, None, None]).astype(np.float32)
    ws = WindowSet(imu, labels, ["a", "b", "c"], np.arange(120) % 6, dataset="watch-exercises")
    monkeypatch.setattr(protocol, "load_model", lambda name: model)
    monkeypatch.setattr(protocol, "prepare_dataset", lambda *a, **k: ws)
    quick = functools.partial(protocol.EvalSettings, min_steps=30)  # a quicker probe
    monkeypatch.setattr(protocol, "EvalSettings", quick)
    got = quality.measure_quality(64, torch.device("cpu"), 0.0, "bf16")
    with torch.no_grad():
        x = torch.from_numpy(imu)
        ref = encoder(x)["mmcl"]
        low_encoder = copy.deepcopy(encoder).eval()
        low_encoder.backbone[5] = Bf16GRU(encoder.backbone[5])
        low = low_encoder(x)["mmcl"]
    distance = 1 - torch.nn.functional.cosine_similarity(ref, low, dim=1)
    assert got["variant"] == "bf16" and got["windows"] == 120
    assert got["max_cosine_distance"] == pytest.approx(float(distance.max()), rel=1e-3, abs=1e-6)
    assert got["mean_cosine_distance"] == pytest.approx(float(distance.mean()), rel=1e-3, abs=1e-6)
    assert 0 < got["mean_cosine_distance"] <= got["max_cosine_distance"] < 0.05
    assert got["accuracy_5shot_change"] == pytest.approx(
        got["accuracy_5shot"] - got["accuracy_5shot_fp32"]
    )
    fp32 = protocol.evaluate(
        model,
        quick(dataset="watch-exercises", shots=[5], seeds=3),
        baselines=(),
        progress=False,
        windows=ws,
    )
    assert got["accuracy_5shot_fp32"] == pytest.approx(np.mean([r["accuracy"] for r in fp32.runs]))
    # the printed line of a measured quality row
    summary = {
        "device": "cpu", "gpu": None, "threads": 2, "matmul_gflops": 1.0,
        "macs_per_window": 1e6, "step_ceiling_windows_per_s": 1.0,
        "inference_ceiling_windows_per_s": 1.0, "egoexo4d_epoch_s": 1.0,
        "egoexo4d_epoch_s_batch16": 1.0, "targets": [],
        "rows": [{"measure": "quality", "batch": 256, **got}],
    }  # fmt: skip
    line = next(s for s in report(summary).splitlines() if s.startswith("bf16 vs fp32"))
    assert line == (
        f"bf16 vs fp32 on 120 watch-exercises windows: cosine distance max "
        f"{got['max_cosine_distance']:.2e}, mean {got['mean_cosine_distance']:.2e}; 5-shot "
        f"accuracy {got['accuracy_5shot']:.4f} ({got['accuracy_5shot_change']:+.4f} vs fp32 "
        f"{got['accuracy_5shot_fp32']:.4f})"
    )


def test_bench_step_is_the_full_primus_step_and_its_profile_covers_every_part():
    """The measured step: the three PRIMUS losses (SS, MM, NN) on cached text-teacher embeddings
    and the scale + permute augmentations; at batch 4 on the CPU every profile share is positive
    and the shares sum to 1."""
    from primus_core.training.bench import measure_step, synthetic_run

    model, augs, source = synthetic_run(4, torch.device("cpu"), windows=16)
    assert {k: type(v).__name__ for k, v in model.losses.items()} == {
        "ss": "SelfSupervisedLoss",
        "mm": "MultimodalLoss",
        "nn": "NearestNeighbourLoss",
    }
    assert sorted(type(a).__name__ for a in augs) == ["Permute", "ScalePerTimestep"]
    assert len(augs) == 2 and len(source) == 16
    result = measure_step(4, torch.device("cpu"), 0.01)
    assert result["windows_per_s"] > 0 and result["variant"] == "eager"
    profile = result["profile"]
    assert list(profile) == [
        "GRU forward",
        "other encoder forward",
        "losses",
        "NN lookup",
        "backward",
        "optimiser",
        "data",
    ]
    assert all(share > 0 for share in profile.values()), profile
    assert sum(profile.values()) == pytest.approx(1.0)


def test_loading_is_measured_on_real_hapt_windows(monkeypatch):
    from primus_core.data import windows as windows_module
    from primus_core.training.bench import measure_loading

    loaded = []
    real = windows_module.load_windows

    def spy(ref, contract, *args, **kwargs):
        ws = real(ref, contract, *args, **kwargs)
        loaded.append((ref, len(ws)))
        return ws

    monkeypatch.setattr(windows_module, "load_windows", spy)
    result = measure_loading(4, torch.device("cpu"), 0.01)
    assert result["windows_per_s"] > 0
    assert len(loaded) == 1 and loaded[0][0] == "hapt" and loaded[0][1] > 1000


def test_int8_is_refused_off_the_cpu():
    """int8 dynamic quantisation runs on the CPU only: any other device is one DataError. The
    'meta' device stands in for CUDA here (no GPU needed)."""
    encoder = create("encoder", "stacked-rnn", hidden_size=16, ssl_dim=8, mmcl_dim=8)
    with pytest.raises(DataError, match="runs on the CPU, not on meta"):
        for_inference(encoder, "int8", torch.device("meta"))
    # refused before anything moved: the caller's encoder is still on the CPU
    assert {p.device.type for p in encoder.parameters()} == {"cpu"}
    if torch.cuda.is_available():
        with pytest.raises(DataError, match="runs on the CPU, not on cuda"):
            for_inference(encoder, "int8", torch.device("cuda"))


def test_reduced_precision_copies_leave_the_callers_encoder_as_it_was():
    """bf16 and int8 are copies: the caller's encoder keeps its weights, dtype and training
    mode; fp32 is the encoder itself, in eval mode."""
    encoder = create("encoder", "stacked-rnn", hidden_size=16, ssl_dim=8, mmcl_dim=8).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    for dtype in ("bf16", "int8"):
        other = for_inference(encoder, dtype, torch.device("cpu"))
        assert other is not encoder and not other.training
        assert encoder.training
        for key, value in encoder.state_dict().items():
            assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    assert for_inference(encoder, "fp32") is encoder and not encoder.training


def test_the_bound_is_sampled_between_slices_of_a_figures_timing_and_not_timed(monkeypatch):
    """``timed(..., between=sample)`` measures the bound's matmul every BOUND_EVERY_S of the
    figure's calls, outside the figure's time; a step or inference row reports the median of
    those samples and the one taken just before, with their range."""
    import time

    from primus_core.training import bench as training_bench

    monkeypatch.setattr(training_bench, "BOUND_EVERY_S", 0.02)
    pauses = []

    def between():
        pauses.append(1)
        time.sleep(0.1)  # 50 calls' time: timed with them, it would make each look 3x slower

    per_call = training_bench.timed(
        lambda: time.sleep(0.002), torch.device("cpu"), 0.1, between=between
    )
    assert len(pauses) >= 3 and per_call < 0.006

    sample, samples = training_bench.bound_sampler(torch.device("cpu"))
    sample()
    sample()
    assert len(samples) == 2 and all(gflops > 0 for gflops in samples)

    row = training_bench.child("inference", 4, "cpu", 0.6, "fp32")
    low, high = row["matmul_gflops_range"]
    assert row["matmul_samples"] >= 2 and low <= row["matmul_gflops"] <= high
