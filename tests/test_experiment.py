"""The diversity-vs-size experiment and the benchmark: corpus grid, verdict statistics, and a
tiny grid / benchmark that really pretrain (tiny encoder, a few steps) and evaluate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from primus_core.config import IMUContract
from primus_core.evaluation.experiment import (
    DiversitySettings,
    ExperimentError,
    build_corpora,
    class_order,
    fit_verdict,
    held_out_subjects,
)
from primus_core.evaluation.protocol import prepare_dataset

sys.path.insert(0, str(Path(__file__).parent))
import official_trees as trees  # noqa: E402

TINY = "encoder.hidden_size=32"


@pytest.fixture(autouse=True)
def _wire_cli():
    from primus_core.cli.eval import eval_command, experiment
    from primus_core.cli.main import cli

    cli.add_command(eval_command)
    cli.add_command(experiment)


@pytest.fixture(scope="module")
def hapt():
    return prepare_dataset("hapt", IMUContract(), progress=False)


def test_corpora_vary_diversity_at_fixed_size_and_size_at_fixed_diversity(hapt):
    s = DiversitySettings(diversities=[2, 4, 8], sizes=[128, 512, 5000], repeats=2)
    corpora, notes = build_corpora(hapt, s)
    assert {(c.diversity, c.size) for c in corpora} == {
        (d, n) for d in (2, 4, 8) for n in (128, 512)
    }
    assert len(notes) == 6 and all("5000" in n for n in notes)  # more windows than exist
    for r in (0, 1):
        sets = {c.diversity: c.classes for c in corpora if c.repeat == r}
        assert sets[2] == sets[4][:2] and sets[4] == sets[8][:4]  # nested
        assert len(set(sets[8])) == 8
    assert class_order(hapt, 0) == class_order(hapt, 0) != class_order(hapt, 1)
    # the frequent activities come first, so the small corpora can be filled
    counts = np.bincount(hapt.labels)
    first = [hapt.class_names.index(c) for c in class_order(hapt, 0)[:6]]
    assert min(counts[first]) > 400
    overrides = corpora[0].overrides()
    assert overrides[0].startswith("data.include_classes=[") and "data.max_windows=128" in overrides
    with pytest.raises(ExperimentError, match="12 labelled activities"):
        build_corpora(hapt, DiversitySettings(diversities=[2, 20]))


def synthetic_cells(div_slope: float, size_slope: float, seeds: int, noise: float) -> list[dict]:
    rng = np.random.default_rng(0)
    seed_offsets = rng.normal(0, noise, seeds)  # a seed moves every cell alike (paired)
    cells = []
    for d in (2, 4, 8):
        for n in (128, 256, 512):
            base = 0.4 + div_slope * np.log2(d) + size_slope * np.log2(n)
            scores = {
                s: float(base + seed_offsets[s] + rng.normal(0, noise / 3)) for s in range(seeds)
            }
            cells.append(
                {
                    "model": f"d{d}n{n}",
                    "diversity": d,
                    "size": n,
                    "repeat": 0,
                    "seed_scores": scores,
                    "accuracy_mean": float(np.mean(list(scores.values()))),
                    "accuracy_std": 0.0,
                }
            )
    return cells


def test_verdict_finds_a_real_difference_and_admits_none():
    v = fit_verdict(synthetic_cells(0.05, 0.0, seeds=8, noise=0.02), bootstrap=500)
    assert v["per_doubling_diversity"]["estimate"] == pytest.approx(0.05, abs=0.01)
    assert v["difference"]["low"] > 0
    assert "More diversity helped more" in v["text"]
    v = fit_verdict(synthetic_cells(0.0, 0.0, seeds=8, noise=0.05), bootstrap=500)
    assert v["difference"]["low"] < 0 < v["difference"]["high"]
    assert "No difference" in v["text"]
    v = fit_verdict(synthetic_cells(0.05, 0.0, seeds=2, noise=0.02), bootstrap=200)
    assert "no call is made" in v["text"]
    flat = [c for c in synthetic_cells(0.0, 0.0, 6, 0.01) if c["diversity"] == 2]
    assert "cannot be separated" in fit_verdict(flat, bootstrap=100)["text"]


@pytest.mark.slow
def test_tiny_grid_runs_end_to_end(cli, tmp_path):
    out = tmp_path / "dvs"
    args = [
        "experiment",
        "diversity-vs-size",
        "--diversities",
        "2,4",
        "--sizes",
        "128,256",
        "--steps",
        "2",
        "--seeds",
        "2",
        "--shots",
        "1,3",
        "--min-steps",
        "10",
        "--set",
        TINY,
        "--set",
        "data.pretrain.hapt.stride_seconds=null",  # half the windows: a cheaper in-domain test
        "--bootstrap",
        "200",
        "--out",
        out,
        "--no-progress",
    ]
    res = cli(*args)
    assert "| 2 activities |" in res.out and "**Verdict.**" in res.out
    report = json.loads((out / "diversity_vs_size.json").read_text())
    grid = [c for c in report["cells"] if c["diversity"] > 0]
    assert {(c["diversity"], c["size"]) for c in grid} == {(2, 128), (2, 256), (4, 128), (4, 256)}
    assert any(c["model"].startswith("untrained") for c in report["cells"])
    assert all(report["pretraining"][c["key"]]["steps"] == 2 for c in report["corpora"])
    assert (out / "diversity_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "diversity_vs_size_loss.png").is_file()
    # in-domain on the subjects each run held out; both diversity measures; the analysis
    assert all(len(c["in_domain_scores"]) == 2 for c in grid) and "In-domain" in res.out
    assert all(c["measures"]["effective_clusters"] >= 1 for c in report["corpora"])
    assert {"cross_domain", "in_domain", "measures"} <= set(report["analysis"])
    assert (out / "runs" / "d2-n128-r0" / "eval.json").is_file()
    # a rerun reuses the finished pretraining runs (same weights, same table)
    weights = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/model/model.safetensors")}
    assert len(weights) == 4
    again = cli(*args)
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert (
        again.out.split("Machine:")[1].split("\n", 1)[1]
        == res.out.split("Machine:")[1].split("\n", 1)[1]
    )


def test_tiny_benchmark_holds_out_in_domain_subjects(cli, tmp_path):
    out = tmp_path / "bench"
    res = cli(
        "experiment",
        "benchmark",
        "--recipes",
        "simclr-hapt",
        "--steps",
        "2",
        "--eval-datasets",
        "basicmotions",
        "--seeds",
        "1",
        "--shots",
        "1",
        "--min-steps",
        "5",
        "--no-baselines",
        "--set",
        TINY,
        "--out",
        out,
        "--no-progress",
    )
    assert "## basicmotions" in res.out and "## hapt" in res.out
    report = json.loads((out / "benchmark.json").read_text())
    held = report["results"]["hapt"]["settings"]["test_subjects"]
    assert held == held_out_subjects("simclr-hapt", ["data.val_fraction=0.3", TINY])
    assert len(held) == 9  # 0.3 of HAPT's 30 subjects never seen in pretraining
    assert (out / "benchmark.png").is_file() and (out / "benchmark.md").is_file()


@pytest.fixture
def aria(monkeypatch):
    """projectaria_tools stand-in (a VRS cannot be written here; see official_trees)."""
    for name, module in trees.fake_projectaria_tools().items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("source", ["ego4d", "egoexo4d"])
def test_the_same_command_runs_on_the_papers_corpora(cli, tmp_path, source, aria):
    """EgoExo4D and Ego4D in their official layouts (tiny trees): scenarios are the diversity
    axis, narrations the semantic one; no subject is held out, so no in-domain outcome."""
    make = {"ego4d": trees.make_ego4d, "egoexo4d": trees.make_egoexo4d}[source]
    root = make(tmp_path / source)
    out = tmp_path / "dvs"
    res = cli(
        "experiment",
        "diversity-vs-size",
        "--source",
        source,
        "--diversities",
        "1,2",
        "--sizes",
        "2,3",
        "--steps",
        "1",
        "--seeds",
        "2",
        "--shots",
        "1",
        "--min-steps",
        "5",
        "--eval-datasets",
        "basicmotions",
        "--bootstrap",
        "100",
        "--set",
        f"data.pretrain.{source}.root={root}",
        "--set",
        "data.val_fraction=0",
        "--set",
        "train.batch_size=2",
        "--set",
        "encoder.hidden_size=16",
        "--out",
        out,
        "--no-progress",
    )
    assert "**Verdict.**" in res.out and "effective clusters" in res.out
    report = json.loads((out / "diversity_vs_size.json").read_text())
    assert report["settings"]["source"] == source
    corpora = report["corpora"]
    assert {c["diversity"] for c in corpora} == {1, 2} and corpora
    for c in corpora:
        m = c["measures"]
        assert m["activities"] == c["diversity"] == len(c["classes"])
        assert m["narrations"] == c["size"] and m["effective_clusters"] >= 1
    assert all(not c["in_domain_scores"] for c in report["cells"])
    assert "in_domain" not in report["analysis"]


def test_loss_curves_flatness_and_in_domain_cells(tmp_path):
    from primus_core.evaluation.experiment import (
        Corpus,
        cell_scores,
        flatness,
        loss_curve,
        plot_loss_curves,
    )

    run = tmp_path / "d2-n100-r0"
    run.mkdir()
    rows = [{"step": s, "loss": 10.0 / s} for s in range(1, 11)] + [{"step": 10, "val_loss": 1}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curve = loss_curve(run)
    assert curve[0] == (1, 10.0) and len(curve) == 10
    assert flatness(curve) == pytest.approx((10 / 9.5 - 10 / 7.5) / (10 / 7.5), rel=0.05)
    assert flatness([(s, 1.0) for s in range(10)]) == 0.0 and flatness(curve[:3]) is None
    png = plot_loss_curves({"d2-n100-r0": curve, "d2-n800-r0": curve}, tmp_path / "l.png")
    assert png.read_bytes()[:4] == b"\x89PNG"

    def runs(model, accs):
        return [{"model": model, "seed": s, "accuracy": a} for s, a in enumerate(accs)]

    results = {
        "watch": {"runs": runs("d2-n100-r0", [0.2, 0.4])},
        "bm": {"runs": runs("d2-n100-r0", [0.6, 0.8]) + runs("untrained", [0.1, 0.1])},
        "hapt": {"runs": runs("d2-n100-r0", [0.5, 0.7])},
    }
    corpus = Corpus(2, 100, 0, ["a", "b"], 500)
    cells = {c["model"]: c for c in cell_scores(results, [corpus], ["watch", "bm"], "hapt")}
    assert cells["d2-n100-r0"]["seed_scores"] == pytest.approx({0: 0.4, 1: 0.6})
    assert cells["d2-n100-r0"]["in_domain_scores"] == {0: 0.5, 1: 0.7}
    assert cells["untrained"]["diversity"] == 0 and cells["untrained"]["seed_scores"] == {
        0: 0.1,
        1: 0.1,
    }
