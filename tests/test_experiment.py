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
    Corpus,
    DiversitySettings,
    EvalPlan,
    ExperimentError,
    build_corpora,
    cached_evaluation,
    class_order,
    corpus_measures,
    fit_verdict,
    held_out_subjects,
    verdict_text,
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
    # the markdown report is what was printed
    assert (out / "diversity_vs_size.md").read_text().rstrip("\n") == res.out.rstrip("\n")
    # in-domain on the subjects each run held out; both diversity measures; the analysis
    assert all(len(c["in_domain_scores"]) == 2 for c in grid) and "In-domain" in res.out
    assert all(c["measures"]["effective_clusters"] >= 1 for c in report["corpora"])
    assert {c["measures"]["teacher"] for c in report["corpora"]} == {"minilm-text"}
    assert {"cross_domain", "in_domain", "measures"} <= set(report["analysis"])
    assert len(report["results"]["hapt"]["classes"]) == 12  # in-domain over all activities
    in_domain = report["analysis"]["in_domain"]
    assert "in-domain few-shot accuracy" in in_domain["bootstrap"]["text"]
    assert "power" in in_domain and "variance_components" in in_domain["mixed_effects"]
    assert (out / "runs" / "d2-n128-r0" / "eval.json").is_file()
    # a rerun reuses the finished pretraining runs (same weights, same table)
    weights = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/model/model.safetensors")}
    assert len(weights) == 4
    # ... and each corpus's evaluation and measures (same plan): the files are not rewritten
    kept = {
        p: p.stat().st_mtime_ns
        for name in ("eval.json", "measures.json")
        for p in out.glob(f"runs/*/{name}")
    }
    assert len(kept) == 8
    again = cli(*args)
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
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
        # one of the two runs evaluates with the reference's protocol
        *(["--protocol", "reference"] if source == "egoexo4d" else []),
    )
    assert "**Verdict.**" in res.out and "effective clusters" in res.out
    report = json.loads((out / "diversity_vs_size.json").read_text())
    assert report["settings"]["source"] == source
    protocol = "reference" if source == "egoexo4d" else "primus"
    assert report["settings"]["plan"]["protocol"] == protocol
    evals = [json.loads(p.read_text()) for p in out.glob("runs/*/eval.json")]
    results = [r for e in evals for r in e["results"].values()]
    assert results and {r["protocol"]["name"] for r in results} == {protocol}
    assert {r["settings"]["protocol"] for r in results} == {protocol}
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


def test_each_repeat_has_its_own_train_seed_and_activity_order(hapt):
    s = DiversitySettings(diversities=[2, 4], sizes=[128], repeats=3, order_seed=5)
    corpora, _ = build_corpora(hapt, s)
    by_repeat = {r: [c for c in corpora if c.repeat == r] for r in range(3)}
    assert all(len(cs) == 2 for cs in by_repeat.values())
    orders = [tuple(by_repeat[r][-1].classes) for r in range(3)]  # the d = 4 corpus
    assert len(set(orders)) == 3  # a different (nested) draw of activities per repeat
    for r in range(3):
        assert list(orders[r]) == class_order(hapt, 5 + r)[:4]
        seeds = {o for c in by_repeat[r] for o in c.overrides() if o.startswith("train.seed=")}
        assert seeds == {f"train.seed={1234 + r}"}
        assert {c.key for c in by_repeat[r]} == {f"d2-n128-r{r}", f"d4-n128-r{r}"}


def verdict(diff: tuple[float, float], seeds: int, repeats: int) -> str:
    point = {"estimate": 0.01, "low": 0.0, "high": 0.02}
    low, high = diff
    v = {
        "seeds": seeds,
        "repeats": repeats,
        "per_doubling_diversity": point,
        "per_doubling_size": point,
        "difference": {"estimate": (low + high) / 2, "low": low, "high": high},
    }
    return verdict_text(v)


def test_verdict_texts_size_wins_the_5_sample_threshold_and_the_repeat_warning():
    assert "More windows helped more than more diversity" in verdict((-0.05, -0.01), 5, 1)
    assert "More diversity helped more" in verdict((0.01, 0.05), 5, 1)
    assert "No difference" in verdict((-0.01, 0.05), 5, 1)
    # the call needs at least 5 seed x repeat samples: 4 is not enough, 5 (or 2 x 3) is
    assert "no call is made" in verdict((-0.05, -0.01), 4, 1)
    assert "With only 4 seed/repeat sample(s)" in verdict((-0.05, -0.01), 2, 2)
    assert "no call is made" not in verdict((-0.05, -0.01), 5, 1)
    assert "More windows helped more" in verdict((-0.05, -0.01), 2, 3)
    # one pretraining run per corpus: the interval does not cover pretraining noise
    one = verdict((0.01, 0.05), 5, 1)
    assert "do not cover pretraining noise" in one and "--repeats 3" in one
    three = verdict((0.01, 0.05), 5, 3)
    assert "and the 3 pretraining repeats" in three and "pretraining noise" not in three


def test_eval_json_is_reused_while_the_plan_is_the_same_and_measures_are_kept(
    tmp_path, monkeypatch
):
    from primus_core.evaluation import experiment

    calls = []

    def fake_evaluate_models(models, plan, progress=True, windows=None):
        calls.append(list(plan.shots))
        return {"basicmotions": {"shots": list(plan.shots), "call": len(calls)}}

    monkeypatch.setattr(experiment, "evaluate_models", fake_evaluate_models)
    path = tmp_path / "eval.json"
    plan = EvalPlan(datasets=["basicmotions"], shots=[1, 5], baselines=["untrained"])
    first = cached_evaluation("m", tmp_path, plan, path, False)
    mtime = path.stat().st_mtime_ns
    again = cached_evaluation(
        "m", tmp_path, EvalPlan(["basicmotions"], [1, 5], baselines=["untrained"]), path, False
    )
    assert again == first and calls == [[1, 5]] and path.stat().st_mtime_ns == mtime
    changed = EvalPlan(["basicmotions"], [1, 3], baselines=["untrained"])
    assert cached_evaluation("m", tmp_path, changed, path, False)["basicmotions"]["call"] == 2
    assert calls == [[1, 5], [1, 3]]
    assert json.loads(path.read_text())["plan"]["shots"] == [1, 3]
    # measures.json, once written, is kept (not recomputed, not rewritten)
    corpus = Corpus(diversity=2, size=128, repeat=0, classes=["a", "b"], available=500)
    s = DiversitySettings(spread=False)
    measures = tmp_path / "measures.json"
    assert corpus_measures(s, corpus, [], measures) == {"activities": 2, "windows": 128}
    measures.write_text(json.dumps({"activities": 2, "windows": 128, "kept": True}))
    mtime = measures.stat().st_mtime_ns
    assert corpus_measures(s, corpus, [], measures)["kept"] is True
    assert measures.stat().st_mtime_ns == mtime


def test_model_step_is_read_from_the_model_config_and_summarised_per_size(tmp_path):
    from primus_core.evaluation.experiment import model_step, model_steps_line

    steps = {"d2-n100-r0": 221, "d4-n100-r0": 150, "d8-n100-r0": 300, "d2-n800-r0": 90}
    for key, step in steps.items():
        (tmp_path / key / "model").mkdir(parents=True)
        config = {"format": "x", "validation": {"step": step, "loss": 1.5}}
        (tmp_path / key / "model" / "config.json").write_text(json.dumps(config))
    (tmp_path / "no-val" / "model").mkdir(parents=True)
    (tmp_path / "no-val" / "model" / "config.json").write_text("{}")
    assert {k: model_step(tmp_path / k) for k in steps} == steps
    assert model_step(tmp_path / "no-val") is None and model_step(tmp_path / "absent") is None
    report = {
        "settings": {"steps": 600},
        "corpora": [{"key": k, "size": int(k.split("-n")[1].split("-")[0])} for k in steps]
        + [{"key": "d2-n5000-r0", "size": 5000}],  # no step known: left out
        "model_steps": {**steps, "d2-n5000-r0": None},
    }
    line = model_steps_line(report)
    assert "100 windows: median step 221 (range 150-300); 800 windows: median step 90 " in line
    assert line.endswith("(range 90-90), of 600 steps.") and "5000" not in line
    assert model_steps_line({**report, "model_steps": {}}) is None


def test_diversity_plot_has_a_line_and_band_per_diversity_and_a_dashed_untrained_line(
    tmp_path, monkeypatch
):
    from primus_core.evaluation import reports
    from primus_core.evaluation.experiment import plot_diversity

    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(reports, "save_figure", keep)
    cells = [
        {"model": f"d{d}n{n}", "diversity": d, "size": n, "seed_scores": {0: a, 1: a + 0.1}}
        for d, n, a in ((2, 128, 0.3), (2, 256, 0.4), (4, 128, 0.5), (4, 256, 0.6))
    ]
    cells.append({"model": "untrained", "diversity": 0, "size": 0, "accuracy_mean": 0.2})
    settings = {"recipe": "r", "source": "hapt", "steps": 2, "plan": {"datasets": ["bm"]}}
    plot_diversity({"cells": cells, "settings": settings}, tmp_path / "p.png")
    (ax,) = figures[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"2 activities", "4 activities", "untrained"}
    np.testing.assert_allclose(lines["2 activities"].get_ydata(), [0.35, 0.45])
    np.testing.assert_allclose(lines["4 activities"].get_xdata(), [128, 256])
    assert lines["untrained"].get_linestyle() == "--"
    np.testing.assert_allclose(lines["untrained"].get_ydata(), [0.2, 0.2])
    assert [s.get_linestyle() for n, s in lines.items() if n != "untrained"] == ["-", "-"]
    bands = ax.collections  # one ± std band per diversity: mean ± sample std of (a, a + 0.1)
    assert len(bands) == 2
    top = bands[0].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(0.45 + np.std([0.4, 0.5], ddof=1))


def test_in_domain_verdict_is_fitted_on_the_in_domain_scores():
    planted = synthetic_cells(0.05, 0.0, seeds=8, noise=0.02)
    null = synthetic_cells(0.0, 0.0, seeds=8, noise=0.05)
    cells = [
        {**c, "seed_scores": n["seed_scores"], "in_domain_scores": c["seed_scores"]}
        for c, n in zip(planted, null, strict=True)
    ]
    v = fit_verdict(cells, bootstrap=300, key="in_domain_scores")
    assert v["outcome"] == "in-domain"
    assert v["per_doubling_diversity"]["estimate"] == pytest.approx(0.05, abs=0.01)
    assert "changed in-domain few-shot accuracy" in v["text"]
    assert "More diversity helped more" in v["text"]
    cross = fit_verdict(cells, bootstrap=300)
    assert cross["outcome"] == "cross-domain" and "No difference" in cross["text"]


def test_in_domain_plan_tests_each_corpus_on_the_subjects_its_pretraining_held_out(hapt):
    from primus_core.data.windows import split_by_subject
    from primus_core.evaluation.experiment import corpus_plan, holds_out
    from primus_core.registry.recipes import resolve_recipe
    from primus_core.training.trainer import load_data

    assert holds_out(resolve_recipe("primus-hapt", []).recipe)
    assert not holds_out(resolve_recipe("primus-hapt", ["data.val_fraction=0"]).recipe)
    with_val = resolve_recipe("primus-hapt", ["data.validation=[{type: hapt}]"]).recipe
    assert not holds_out(with_val)  # an official validation set: cross-domain only
    s = DiversitySettings(diversities=[2, 4], sizes=[128], repeats=2)
    corpora, _ = build_corpora(hapt, s)
    held = {}
    for corpus in (c for c in corpora if c.diversity == 2):
        overrides = corpus.overrides()
        plan = corpus_plan(s, overrides, baselines=False, in_domain=True)
        assert plan.datasets == [*s.plan.datasets, "hapt"] and plan.baselines == []
        # the trainer's own split of this corpus: the subjects of its validation windows
        recipe = resolve_recipe("primus-hapt", overrides).recipe
        windows = load_data(recipe, IMUContract())
        _, val_idx = split_by_subject(windows, recipe.data.val_fraction, recipe.train.seed)
        want = sorted(int(x) for x in np.unique(windows.subjects[val_idx]))
        assert (
            plan.in_domain
            == {"hapt": want}
            == {"hapt": held_out_subjects("primus-hapt", overrides)}
        )
        settings = plan.settings("hapt")
        assert settings.test_subjects == want and settings.dataset == "hapt"
        held[corpus.repeat] = want
    assert held[0] != held[1]  # each repeat's train.seed holds out other subjects
    plan = corpus_plan(s, corpora[0].overrides(), baselines=True, in_domain=False)
    assert "hapt" not in plan.datasets and plan.in_domain == {}


def test_benchmark_defaults_and_baselines_run_once_per_dataset(tmp_path):
    from primus_core.data.windows import WindowSet
    from primus_core.evaluation.experiment import BenchmarkSettings, evaluate_models
    from primus_core.evaluation.protocol import untrained_encoder
    from primus_core.zoo.modeldir import save_model_dir

    s = BenchmarkSettings()
    assert s.recipes == [
        "primus-hapt",
        "primus-ss-mm-hapt",
        "imu2clip-hapt",
        "simclr-hapt",
        "supervised-hapt",
    ]
    assert s.cross_domain == ["watch-exercises", "basicmotions"] and s.in_domain == "hapt"
    assert s.held_out_fraction == 0.3 and s.steps == 300
    params = {"hidden_size": 16, "ssl_dim": 8, "mmcl_dim": 8}
    models = {}
    for name, seed in (("a", 1), ("b", 2)):
        encoder = untrained_encoder("stacked-rnn", params, seed=seed)
        models[name] = save_model_dir(
            encoder, tmp_path / name, encoder_type="stacked-rnn", encoder_params=params
        )
    plan = EvalPlan(
        datasets=["basicmotions"], shots=[1], seeds=2, baselines=["untrained", "classical"]
    )
    plan.eval_overrides = {"min_steps": 5}
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    imu = (rng.normal(size=(60, 6, 250)) + labels[:, None, None]).astype(np.float32)
    ws = WindowSet(imu, labels, ["a", "b", "c"], np.arange(60) % 6, dataset="basicmotions")
    result = evaluate_models(models, plan, False, {"basicmotions": ws})["basicmotions"]
    names = [m["name"] for m in result["models"]]
    assert names == ["a", "b", "untrained stacked-rnn", "classical (features + logreg)"]
    per_model = {n: sum(r["model"] == n for r in result["runs"]) for n in names}
    assert per_model == dict.fromkeys(names, 2)  # 1 shot x 2 seeds each, baselines once
    assert [r["model"] for r in result["summary"]] == names


def test_pretrain_reuses_a_finished_run_and_resumes_an_interrupted_one(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from primus_core.evaluation.experiment import pretrain
    from primus_core.training import trainer

    calls = []

    def fake_train(recipe, overrides, out, resume, max_steps, device, progress):
        calls.append({"resume": resume, "max_steps": max_steps})
        (out / "model").mkdir(parents=True, exist_ok=True)
        interrupted = "SIGTERM" if len(calls) == 1 else None
        return SimpleNamespace(
            interrupted=interrupted,
            model_dir=out / "model",
            steps=7,
            best_val_loss=1.0,
            losses=[2.0, 1.5],
        )

    monkeypatch.setattr(trainer, "train", fake_train)
    run = tmp_path / "d2-n128-r0"
    # a fresh run starts from scratch; this one is interrupted: no pretrained.json
    with pytest.raises(ExperimentError, match="interrupted"):
        pretrain("primus-hapt", [], run, 7, "cpu", False)
    assert calls == [{"resume": False, "max_steps": 7}] and not (run / "pretrained.json").exists()
    # the rerun finds its checkpoint and resumes it
    (run / "checkpoint.pt").write_bytes(b"x")
    assert pretrain("primus-hapt", [], run, 7, "cpu", False) == run / "model"
    assert calls[1] == {"resume": True, "max_steps": 7}
    marker = json.loads((run / "pretrained.json").read_text())
    assert marker["steps"] == 7 and marker["final_loss"] == 1.5
    # a finished run (pretrained.json and model/) is reused without training
    assert pretrain("primus-hapt", [], run, 7, "cpu", False) == run / "model"
    assert len(calls) == 2


def repeat_grid(score) -> list[dict]:
    """3 diversities x 3 sizes x 3 repeats x 5 seeds, accuracy = score(d, n, r, s)."""
    return [
        {
            "model": f"d{d}-n{n}-r{r}",
            "diversity": d,
            "size": n,
            "repeat": r,
            "seed_scores": {s: float(score(d, n, r, s)) for s in range(5)},
        }
        for d in (2, 4, 8)
        for n in (128, 256, 512)
        for r in range(3)
    ]


def test_bootstrap_resamples_repeats_and_is_paired_across_cells():
    rng = np.random.default_rng(0)
    seed_effect, repeat_effect = rng.normal(0, 0.05, 5), rng.normal(0, 0.05, 3)

    def base(d, n):
        return 0.4 + 0.02 * np.log2(d) + 0.01 * np.log2(n)

    # a seed or a repeat that moves every cell alike changes no slope: paired resampling
    # (the same seeds and repeats for every cell) gives an interval of zero width
    shared = fit_verdict(
        repeat_grid(lambda d, n, r, s: base(d, n) + seed_effect[s] + repeat_effect[r]), 300
    )
    for name in ("per_doubling_diversity", "per_doubling_size", "difference"):
        assert shared[name]["high"] - shared[name]["low"] < 1e-9, name
    assert shared["per_doubling_diversity"]["estimate"] == pytest.approx(0.02)
    assert shared["difference"]["estimate"] == pytest.approx(0.01)
    # pretraining noise: each (corpus, repeat) run lands elsewhere, identically for every eval
    # seed; only resampling the repeats can show it
    run_noise = {(d, n, r): rng.normal(0, 0.03) for d in (2, 4, 8) for n in (128, 256, 512)
                 for r in range(3)}  # fmt: skip
    noisy = fit_verdict(repeat_grid(lambda d, n, r, s: base(d, n) + run_noise[(d, n, r)]), 300)
    assert noisy["repeats"] == 3 and noisy["seeds"] == 5
    width = noisy["difference"]["high"] - noisy["difference"]["low"]
    assert width > 1e-3  # 0 if only the (identical) seeds were resampled
    first = [c for c in repeat_grid(lambda d, n, r, s: base(d, n) + run_noise[(d, n, r)])
             if c["repeat"] == 0]  # fmt: skip
    single = fit_verdict(first, 300)["difference"]
    assert single["high"] - single["low"] < 1e-9  # one repeat: nothing left to resample
    assert "and the 3 pretraining repeats" in noisy["text"]
