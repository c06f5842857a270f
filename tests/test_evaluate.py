"""Few-shot / zero-shot evaluation: sampling, subject splits, the classical baseline on real
HAPT, zero-shot with the real MiniLM text teacher, reports and the `primus eval` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from primus_core.config import IMUContract
from primus_core.data.windows import WindowSet
from primus_core.evaluation.protocol import (
    ALL,
    ClassicalSystem,
    EncoderSystem,
    EvalError,
    EvalSettings,
    LoadedModel,
    ReferenceHead,
    System,
    class_prompts,
    evaluate,
    fit_reference,
    metrics,
    parse_shots,
    prepare_dataset,
    prompt_embeddings,
    reference_lr_factor,
    run_systems,
    shot_indices,
    split_for_seed,
    untrained_encoder,
)
from primus_core.evaluation.reports import (
    eval_markdown,
    markdown_table,
    summarise,
    write_eval_report,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _wire_cli():
    """Add the commands to the root group (the lead wires them in cli.py; this is idempotent)."""
    from primus_core.cli.eval import eval_command, experiment
    from primus_core.cli.main import cli

    cli.add_command(eval_command)
    cli.add_command(experiment)


@pytest.fixture(scope="module")
def watch() -> WindowSet:
    return prepare_dataset("watch-exercises", IMUContract(), progress=False)


@pytest.fixture(scope="module")
def hapt() -> WindowSet:
    return prepare_dataset("hapt", IMUContract(), progress=False)


# ---------------------------------------------------------------------------- sampling
def test_few_shot_sampling_is_seeded_and_class_balanced(hapt):
    s = EvalSettings(dataset="hapt")
    train_idx, _ = split_for_seed(hapt, s, seed=3)
    train_labels = hapt.labels[train_idx]
    for k in (1, 5, 40):
        a = shot_indices(hapt, train_idx, k, seed=7)
        b = shot_indices(hapt, train_idx, k, seed=7)
        c = shot_indices(hapt, train_idx, k, seed=8)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        assert set(a) <= set(train_idx)
        counts = np.bincount(hapt.labels[a], minlength=len(hapt.class_names))
        available = np.bincount(train_labels, minlength=len(hapt.class_names))
        np.testing.assert_array_equal(counts, np.minimum(k, available))
    assert len(shot_indices(hapt, train_idx, ALL, seed=0)) == len(train_idx)


class Recorder(System):
    """Records what each fit was given; predicts the majority training class."""

    name, kind, mode = "recorder", "model", "linear"

    def __init__(self, ws: WindowSet):
        self.ws, self.calls = ws, []

    def run(self, train_idx, test_idx, seed):
        self.calls.append((train_idx.copy(), test_idx.copy()))
        majority = np.bincount(self.ws.labels[train_idx]).argmax()
        return metrics(self.ws.labels[test_idx], np.full(len(test_idx), majority))


def test_subjects_never_leak_between_shots_and_test(watch):
    recorder = Recorder(watch)
    runs = run_systems(
        [recorder],
        watch,
        EvalSettings(dataset="watch-exercises", shots=[1, 5, ALL], seeds=4),
        progress=False,
    )
    assert len(runs) == len(recorder.calls) == 12
    tests = set()
    for train_idx, test_idx in recorder.calls:
        assert set(watch.subjects[train_idx]).isdisjoint(watch.subjects[test_idx])
        tests.add(tuple(sorted(set(watch.subjects[test_idx]))))
    assert len(tests) > 1  # each seed draws other test subjects
    fixed = Recorder(watch)
    run_systems(
        [fixed],
        watch,
        EvalSettings(dataset="watch-exercises", shots=[2], seeds=3, test_subjects=[1, 2]),
        progress=False,
    )
    for train_idx, test_idx in fixed.calls:
        assert set(watch.subjects[test_idx]) == {1, 2}
        assert not {1, 2} & set(watch.subjects[train_idx])


def test_metrics_on_a_known_case():
    got = metrics(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    assert got["accuracy"] == pytest.approx(0.75)
    assert got["mean_class_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert got["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


# ---------------------------------------------------------------------------- classical
def test_classical_baseline_reaches_its_known_level_on_hapt(hapt):
    """All 12 HAPT classes (6 activities + 6 transitions), 5 s windows, all training labels,
    held-out subjects: statistical features + logistic regression score above 0.9."""
    system = ClassicalSystem(hapt)
    s = EvalSettings(dataset="hapt", shots=[ALL], seeds=2)
    runs = run_systems([system], hapt, s, progress=False)
    accuracies = [r["accuracy"] for r in runs]
    assert min(accuracies) > 0.9, accuracies
    assert len(hapt.class_names) == 12


# ---------------------------------------------------------------------------- zero-shot
class TableEncoder(nn.Module):
    """A stand-in encoder whose 'mmcl' output is a text embedding chosen by the window's class
    (channel 0 holds the class id), plus noise: a perfectly text-aligned IMU encoder."""

    def __init__(self, table: torch.Tensor, noise: float = 0.02):
        super().__init__()
        self.register_buffer("table", table)
        self.noise = noise
        self.imu_contract = IMUContract()
        self.output_sizes = {"emb": table.shape[1], "mmcl": table.shape[1]}

    def forward(self, x):
        cls = x[:, 0, 0].round().long()
        gen = torch.Generator().manual_seed(0)
        out = self.table[cls] + self.noise * torch.randn(len(x), self.table.shape[1], generator=gen)
        return {"emb": out, "mmcl": out}


def synthetic_windows(classes: list[str], per_class: int, subjects: int) -> WindowSet:
    n = len(classes) * per_class
    labels = np.repeat(np.arange(len(classes)), per_class)
    imu = np.zeros((n, 6, 250), np.float32)
    imu[:, 0, :] = labels[:, None]
    phrases = [c.replace("_", " ") for c in classes]
    return WindowSet(
        imu=imu,
        labels=labels,
        class_names=classes,
        subjects=np.arange(n) % subjects,
        narrations=[f"a person is {phrases[y]}" for y in labels],
        dataset="synthetic",
    )


def test_zeroshot_with_the_minilm_text_teacher():
    classes = ["walking", "walking_upstairs", "sitting", "lying_down", "playing_badminton"]
    ws = synthetic_windows(classes, per_class=6, subjects=6)
    prompts = class_prompts(ws.dataset, ws.class_names)
    assert prompts[0][:2] == ["walking", "a person is walking"] and len(prompts[0]) == 6
    text = prompt_embeddings(prompts, "minilm-text")
    assert text.shape == (5, 384)
    # a prompt of the true class scores highest against the averaged class embeddings
    from primus_core import create

    probes = create("teacher", "minilm-text").embed(
        [f"someone is {c.replace('_', ' ')}" for c in classes]
    )
    assert (probes @ text.T).argmax(1).tolist() == list(range(5))
    # an encoder aligned with the text space classifies with no labels at all
    model = LoadedModel("aligned", TableEncoder(text), "table", {}, ["minilm-text|x"], "test")
    result = evaluate(
        model,
        EvalSettings(dataset="synthetic", mode="zeroshot", seeds=2),
        baselines=(),
        progress=False,
        windows=ws,
    )
    assert [r["shots"] for r in result.runs] == [0, 0]
    assert all(r["accuracy"] == 1.0 for r in result.runs)
    # the linear head starts from those prompts: with no training it predicts like zero-shot
    s = EvalSettings(dataset="synthetic", shots=[1], seeds=1, epochs=0)
    system = EncoderSystem(
        "aligned", "model", model.encoder, ws, s, "linear", "mmcl", text, CPU, 1e-4
    )
    row = run_systems([system], ws, s, progress=False)[0]
    assert row["accuracy"] == row["zeroshot_accuracy"] == 1.0


def test_class_prompts_come_from_class_names_never_from_narrations(tmp_path):
    from primus_datasets.prompts import CLASS_PROMPTS

    # every labelled dataset ships 5-8 hand-written prompts for each of its classes
    for name in ("egoexo4d", "hapt", "watch-exercises", "basicmotions", "realworld"):
        classes = primus_core_info(name).classes
        prompts = class_prompts(name, classes)
        assert prompts == [CLASS_PROMPTS[name][c] for c in classes]
        assert all(5 <= len(p) <= 8 and len(set(p)) == len(p) for p in prompts), name
    # a --prompts file replaces a class's prompts; unknown classes are an error
    path = tmp_path / "prompts.yaml"
    path.write_text("Running: [jogging in a park, running fast]\n")
    from primus_core.evaluation.protocol import read_prompts

    got = class_prompts("basicmotions", ["Standing", "Running"], read_prompts(path))
    assert got[1] == ["jogging in a park", "running fast"]
    assert got[0] == CLASS_PROMPTS["basicmotions"]["Standing"]
    with pytest.raises(EvalError, match="does not have"):
        class_prompts("basicmotions", ["Standing"], {"Swimming": ["swimming"]})
    path.write_text("Running: jogging\n")
    with pytest.raises(EvalError, match="non-empty list"):
        read_prompts(path)


def primus_core_info(name: str):
    from primus_core.components import get_component

    return get_component("dataset", name).factory.info


@pytest.mark.parametrize("protocol", ["primus", "reference"])
def test_zeroshot_is_unchanged_when_test_narrations_are_shuffled(protocol):
    """The leakage test: narrations (what a label-derived prompt would read) are permuted across
    windows; zero-shot and the text-initialised head must not move at all."""
    classes = ["walking", "walking_upstairs", "sitting", "lying_down", "playing_badminton"]
    ws = synthetic_windows(classes, per_class=8, subjects=8)
    from primus_core import create

    table = create("teacher", "minilm-text").embed(
        [f"a person is {c.replace('_', ' ')}" for c in classes]
    )
    model = LoadedModel(
        "aligned", TableEncoder(table, noise=0.05), "table", {}, ["minilm-text|x"], "t"
    )

    def scores(windows: WindowSet) -> list[float]:
        common = {"dataset": "synthetic", "seeds": 2, "protocol": protocol}
        zs = evaluate(
            model,
            EvalSettings(mode="zeroshot", **common),
            baselines=(),
            progress=False,
            windows=windows,
        )
        linear = evaluate(
            model,
            EvalSettings(shots=[1], epochs=0, **common),
            baselines=(),
            progress=False,
            windows=windows,
        )
        return [r["accuracy"] for r in zs.runs] + [r["zeroshot_accuracy"] for r in linear.runs]

    before = scores(ws)
    shuffled = ws.subset(np.arange(len(ws)))
    order = np.random.default_rng(0).permutation(len(ws))
    shuffled.narrations = [ws.narrations[i] for i in order]
    assert shuffled.narrations != ws.narrations
    assert scores(shuffled) == before
    assert min(before) > 0.9  # and the prompts alone classify the aligned encoder


def test_zeroshot_needs_a_head_of_the_teachers_size(watch):
    model = LoadedModel(
        "random",
        untrained_encoder("stacked-rnn", {"hidden_size": 32, "mmcl_dim": 16}),
        "stacked-rnn",
        {},
        [],
        "untrained",
    )
    with pytest.raises(EvalError, match="zero-shot needs a text-aligned head"):
        evaluate(
            model,
            EvalSettings(dataset="watch-exercises", mode="zeroshot"),
            baselines=(),
            progress=False,
            windows=watch,
        )


# ---------------------------------------------------------------------------- modes, baselines
TINY = {"hidden_size": 32, "ssl_dim": 16, "mmcl_dim": 16}


def test_all_modes_and_baselines_on_a_tiny_encoder(watch):
    model = LoadedModel(
        "tiny", untrained_encoder("stacked-rnn", TINY, seed=1), "stacked-rnn", TINY, [], "test-dir"
    )
    small = watch.subset(np.arange(0, len(watch), 3))  # every third window: a quicker test
    common = {
        "dataset": "watch-exercises",
        "shots": [2, 5],
        "seeds": 2,
        "min_steps": 30,
        "finetune_min_steps": 3,
    }
    result = evaluate(model, EvalSettings(**common), progress=False, windows=small)
    names = [m["name"] for m in result.models]
    assert names == [
        "tiny",
        "untrained stacked-rnn",
        "supervised from scratch",
        "classical (features + logreg)",
    ]
    assert len(result.runs) == 4 * 2 * 2
    for row in result.summary:
        assert row["n"] == 2 and 0.0 <= row["accuracy_mean"] <= 1.0
    classical = [r for r in result.summary if r["model"].startswith("classical")]
    assert classical[-1]["accuracy_mean"] > 1.5 / 7  # well above chance on 5 shots
    for mode in ("knn", "finetune"):
        part = evaluate(
            model,
            EvalSettings(mode=mode, **{**common, "seeds": 1}),
            baselines=(),
            progress=False,
            windows=small,
        )
        assert {r["mode"] for r in part.runs} == {mode} and len(part.runs) == 2


def test_reports_json_markdown_and_plot(watch, tmp_path):
    model = LoadedModel(
        "tiny", untrained_encoder("stacked-rnn", TINY), "stacked-rnn", TINY, [], "test-dir"
    )
    result = evaluate(
        model,
        EvalSettings(dataset="watch-exercises", shots=[1, 3], seeds=2, min_steps=10),
        baselines=("classical",),
        progress=False,
        windows=watch,
    ).to_dict()
    paths = write_eval_report(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "primus-eval/1" and len(data["runs"]) == 8
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert "| tiny |" in text and "1-shot" in text and "macro-F1" in text
    assert text == eval_markdown(result)


def test_summary_and_table_means_and_spread():
    runs = [
        {
            "model": "m",
            "shots": 1,
            "seed": s,
            "accuracy": a,
            "macro_f1": a,
            "mean_class_accuracy": a,
        }
        for s, a in enumerate([0.5, 0.7])
    ]
    summary = summarise(runs)
    assert summary[0]["accuracy_mean"] == pytest.approx(0.6)
    assert summary[0]["accuracy_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert "0.600 ± 0.141" in markdown_table(summary)


# ---------------------------------------------------------------------------- the command
def test_eval_command_writes_reports_and_prints_the_table(cli, tmp_path):
    from primus_core.zoo.modeldir import save_model_dir

    encoder = untrained_encoder("stacked-rnn", TINY, seed=2)
    model_dir = save_model_dir(
        encoder, tmp_path / "tiny", encoder_type="stacked-rnn", encoder_params=TINY
    )
    out = tmp_path / "report"
    res = cli(
        "eval",
        model_dir,
        "--dataset",
        "basicmotions",
        "--shots",
        "1,2",
        "--seeds",
        "2",
        "--min-steps",
        "10",
        "--finetune-steps",
        "3",
        "--out",
        out,
        "--no-progress",
    )
    assert "| tiny |" in res.out and "supervised from scratch" in res.out
    assert {p.name for p in out.iterdir()} >= {"eval.json", "eval.md", "eval.png"}
    res = cli(
        "eval",
        model_dir,
        "--dataset",
        "basicmotions",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--min-steps",
        "5",
        "--no-baselines",
        "--json",
        "--no-progress",
    )
    data = json.loads(res.out)
    assert [m["name"] for m in data["models"]] == ["tiny"]


def test_eval_command_user_errors(cli, tmp_path):
    res = cli("eval", "random:stacked-rnn", "--dataset", "basicmotions", "--shots", "1,x", expect=1)
    assert "error: --shots: 'x' is not a whole number" in res.err
    res = cli("eval", str(tmp_path / "nowhere"), "--dataset", "basicmotions", expect=1)
    assert res.err.startswith("error:") and "Traceback" not in res.err
    with pytest.raises(EvalError, match="no labelled windows"):
        prepare_dataset("daphnet", IMUContract(), progress=False)
    assert parse_shots("1, 5,all") == [1, 5, ALL]


# ---------------------------------------------------------------------------- reference protocol
def reference_schedule(n: int, epochs: int, base: float = 1e-4, batch: int = 256) -> list[float]:
    """The reference's learning rates, written afresh from downstream_evaluation/modeling.py:
    T = int(max(n / batch, 1) * epochs), W = max(T // 100, 10), one scheduler step per optimiser
    step; lr = base (s + 1) / W while s < W, then base (1 + cos(pi (s - W) / (T - W))) / 2; Lightning
    runs epochs x ceil(n / batch) steps."""
    total = int(max(n / batch, 1) * epochs)
    warm = max(total // 100, 10)
    out = []
    for step in range(epochs * math.ceil(n / batch)):
        if step < warm:
            out.append(base * (step + 1) / warm)
        else:
            out.append(base * (1 + math.cos(math.pi * (step - warm) / (total - warm))) / 2)
    return out


@pytest.mark.parametrize("n, epochs", [(40, 20), (600, 20), (3000, 1)])
def test_reference_warmup_cosine_schedule(monkeypatch, n, epochs):
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["weight_decay"] == 1e-4
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 3
    fit_reference(ReferenceHead(8, 3, None, seed=0), x, y, None, epochs, 0, CPU)
    want = reference_schedule(n, epochs)
    assert len(seen) == len(want)
    np.testing.assert_allclose(seen, want, rtol=1e-9, atol=1e-15)
    assert reference_lr_factor(0, 20, 10) == pytest.approx(0.1)


def test_reference_head_and_best_validation_checkpoint():
    init = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # prompt means, deliberately not unit length
    head = ReferenceHead(2, 2, init, seed=0)
    assert torch.equal(head.linear.weight, init) and torch.equal(head.linear.bias, torch.zeros(2))
    f = torch.tensor([[2.0, 2.0]])  # normalised, times the rows, logit scale 1
    np.testing.assert_allclose(head(f).detach().numpy(), [[3 / 2**0.5, 0.5 / 2**0.5]], rtol=1e-6)
    random = ReferenceHead(2, 2, None, seed=0)
    assert not random.normalise
    assert torch.equal(random.linear.weight, ReferenceHead(2, 2, None, seed=0).linear.weight)
    # validation every 5 epochs; the weights of the best check (first of equals) are kept
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 4, generator=g)
    y = (x[:, 0] > 0).long()
    val = (x[:100], 1 - y[:100])  # validation labels disagree: training makes it worse
    model, info = fit_reference(ReferenceHead(4, 2, None, seed=3), x, y, val, 20, 0, CPU)
    checks = info["val_checks"]
    assert [e for e, _ in checks] == [5, 10, 15, 20]
    best = max(a for _, a in checks)
    assert info["best_val_accuracy"] == best
    assert info["best_epoch"] == next(e for e, a in checks if a == best)
    with torch.no_grad():
        now = float(((model(val[0]).argmax(1)) == val[1]).float().mean())
    assert now == pytest.approx(best)


def test_reference_prompt_means_are_not_renormalised():
    from primus_core import create

    prompts = [["walking", "a person walking"], ["sitting", "sitting on a chair", "seated"]]
    flat = [p for group in prompts for p in group]
    emb = torch.nn.functional.normalize(
        torch.as_tensor(create("teacher", "minilm-text").embed(flat)), dim=-1
    )
    want = torch.stack([emb[:2].mean(0), emb[2:].mean(0)])
    got = prompt_embeddings(prompts, "minilm-text", renormalise=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert float(got.norm(dim=1).max()) < 0.999
    renormed = prompt_embeddings(prompts, "minilm-text")
    torch.testing.assert_close(renormed.norm(dim=1), torch.ones(2))


def test_eval_command_reference_protocol_records_it(cli, tmp_path):
    from primus_core.zoo.modeldir import save_model_dir

    encoder = untrained_encoder("stacked-rnn", TINY, seed=2)
    model_dir = save_model_dir(
        encoder, tmp_path / "tiny", encoder_type="stacked-rnn", encoder_params=TINY
    )
    res = cli(
        "eval",
        model_dir,
        "--dataset",
        "basicmotions",
        "--protocol",
        "reference",
        "--shots",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "5",
        "--no-baselines",
        "--json",
        "--no-progress",
    )
    data = json.loads(res.out)
    assert data["settings"]["protocol"] == "reference" and data["settings"]["epochs"] == 5
    assert data["protocol"]["name"] == "reference" and data["protocol"]["lr"] == 1e-4
    assert data["protocol"]["logit_scale"] == 1.0
    run = data["runs"][0]
    assert run["val_windows"] > 0 and run["best_epoch"] == 5
    res = cli("eval", model_dir, "--dataset", "basicmotions", "--protocol", "nope", expect=2)
    assert "nope" in res.err
    assert EvalSettings(dataset="realworld", protocol="reference").epoch_count == 50
    assert EvalSettings(dataset="realworld").epoch_count == 20
