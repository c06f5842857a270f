"""Few-shot / zero-shot evaluation: sampling, subject splits, the classical baseline on real
HAPT, zero-shot with the real MiniLM text teacher, reports and the `primus eval` command."""

from __future__ import annotations

import copy
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
    LOGIT_SCALE,
    ClassicalSystem,
    CosineHead,
    EncoderSystem,
    EvalError,
    EvalSettings,
    LoadedModel,
    ReferenceHead,
    System,
    choose_head,
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
    # the reference's NUM_EPOCHS = 20 on EgoExo4D (classification_downstream_egoexo4d.py)
    assert EvalSettings(dataset="egoexo4d", protocol="reference").epoch_count == 20


# ---------------------------------------------------------------------------- documented details
def small_watch(watch: WindowSet, step: int = 20) -> WindowSet:
    return watch.subset(np.arange(0, len(watch), step))


def tiny_model(seed: int = 1, source: str = "test-dir") -> LoadedModel:
    encoder = untrained_encoder("stacked-rnn", TINY, seed=seed)
    return LoadedModel("tiny", encoder, "stacked-rnn", TINY, [], source)


def test_eval_dtype_embeds_frozen_features_in_bf16_and_int8_and_refuses_a_finetune(
    cli, tmp_path, watch
):
    """--dtype: bf16 / int8 embeddings close to fp32 (cosine > 0.95) yet not identical; the fp32
    path is the encoder itself; a non-fp32 finetune is one error line (finetune runs in fp32)."""
    small = small_watch(watch)
    encoder = untrained_encoder("stacked-rnn", TINY, seed=1)
    with torch.no_grad():
        plain = encoder(torch.from_numpy(np.asarray(small.imu, np.float32)))["emb"]
    features = {}
    for dtype in ("fp32", "bf16", "int8"):
        s = EvalSettings(dataset="watch-exercises", mode="knn", dtype=dtype)
        s.check()
        system = EncoderSystem("tiny", "model", encoder, small, s, "knn", "emb", None, CPU, 1e-4)
        features[dtype] = system.features
    torch.testing.assert_close(features["fp32"], plain, rtol=1e-5, atol=1e-6)
    for dtype in ("bf16", "int8"):
        got = features[dtype]
        assert got.dtype == torch.float32 and got.shape == plain.shape
        assert not torch.equal(got, plain), f"{dtype} was silently computed in fp32"
        cos = torch.nn.functional.cosine_similarity(got, plain, dim=1)
        assert float(cos.min()) > 0.95, dtype
    for dtype in ("bf16", "int8"):
        with pytest.raises(EvalError, match="finetune runs in fp32"):
            EvalSettings(dataset="basicmotions", mode="finetune", dtype=dtype).check()
    res = cli(
        "eval", "random:stacked-rnn", "--dataset", "basicmotions", "--mode", "finetune",
        "--dtype", "bf16", expect=1,
    )  # fmt: skip
    assert res.err.count("error:") == 1 and "finetune runs in fp32" in res.err
    assert "Traceback" not in res.err
    from primus_core.zoo.modeldir import save_model_dir

    model_dir = save_model_dir(
        encoder, tmp_path / "tiny", encoder_type="stacked-rnn", encoder_params=TINY
    )
    res = cli(
        "eval", model_dir, "--dataset", "basicmotions", "--mode", "knn", "--dtype", "int8",
        "--shots", "1", "--seeds", "1", "--no-baselines", "--json", "--no-progress",
    )  # fmt: skip
    data = json.loads(res.out)
    assert data["settings"]["dtype"] == "int8" and len(data["runs"]) == 1


def test_random_spec_is_the_encoders_default_parameters_built_after_seed_0():
    from primus_core import create
    from primus_core.evaluation.protocol import load_model

    torch.manual_seed(123)  # the caller's global seed must not matter
    loaded = load_model("random:stacked-rnn")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        want = create("encoder", "stacked-rnn")
        torch.manual_seed(1)
        other = create("encoder", "stacked-rnn")
    assert loaded.encoder_type == "stacked-rnn" and loaded.encoder_params == {}
    assert loaded.source == "untrained" and loaded.name == "random:stacked-rnn"
    got = loaded.encoder.state_dict()
    assert got.keys() == want.state_dict().keys()
    for key, value in want.state_dict().items():
        assert torch.equal(got[key], value), key
    assert any(not torch.equal(got[k], v) for k, v in other.state_dict().items())


class SplitRecorder(System):
    """Records the (shots, test, validation) indices of each fit; predicts class 0."""

    kind, mode = "model", "linear"

    def __init__(self, name: str, ws: WindowSet):
        self.name, self.ws, self.calls = name, ws, []

    def run(self, train_idx, test_idx, seed, val_idx=None):
        val = None if val_idx is None else val_idx.copy()
        self.calls.append((train_idx.copy(), test_idx.copy(), val))
        return metrics(self.ws.labels[test_idx], np.zeros(len(test_idx), np.int64))


@pytest.mark.parametrize("protocol", ["primus", "reference"])
def test_every_system_gets_the_same_shots_and_the_same_test_windows(watch, protocol):
    first, second = SplitRecorder("a", watch), SplitRecorder("b", watch)
    s = EvalSettings(dataset="watch-exercises", shots=[1, 5], seeds=3, protocol=protocol)
    runs = run_systems([first, second], watch, s, progress=False)
    assert len(first.calls) == len(second.calls) == 6 and len(runs) == 12
    for (ta, sa, va), (tb, sb, vb) in zip(first.calls, second.calls, strict=True):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(sa, sb)
        assert (va is None) == (vb is None) == (protocol == "primus")
        if va is not None:
            np.testing.assert_array_equal(va, vb)
        # every window of the test subjects is scored (no batch dropped), none of them trained on
        tested = np.isin(watch.subjects, watch.subjects[sa])
        assert sorted(sa.tolist()) == np.flatnonzero(tested).tolist()
        assert not np.isin(ta, sa).any()


def test_two_encoders_with_identical_weights_get_identical_scores(watch):
    """Same shots and test windows for every system: a copy of the model under another name
    scores exactly like it (linear probe and kNN, 2 shots x 2 seeds)."""
    small = small_watch(watch, 6)
    encoder = untrained_encoder("stacked-rnn", TINY, seed=4)
    for mode in ("linear", "knn"):
        s = EvalSettings(dataset="watch-exercises", shots=[1, 3], seeds=2, min_steps=20, mode=mode)
        s.check()
        systems = [
            EncoderSystem(name, "model", enc, small, s, mode, "emb", None, CPU, 1e-4)
            for name, enc in (("a", encoder), ("b", copy.deepcopy(encoder)))
        ]
        runs = run_systems(systems, small, s, progress=False)
        a = [{k: v for k, v in r.items() if k != "model"} for r in runs if r["model"] == "a"]
        b = [{k: v for k, v in r.items() if k != "model"} for r in runs if r["model"] == "b"]
        assert len(a) == 4 and a == b


class StubEncoder(nn.Module):
    """'emb' = the first two channels at time 0: features chosen window by window."""

    def __init__(self):
        super().__init__()
        self.imu_contract = IMUContract()
        self.output_sizes = {"emb": 2}

    def forward(self, x):
        return {"emb": x[:, :2, 0]}


def test_default_head_is_mmcl_when_present_else_emb():
    assert choose_head(untrained_encoder("stacked-rnn", TINY), None) == "mmcl"
    assert choose_head(untrained_encoder("stacked-rnn", TINY), "emb") == "emb"
    assert choose_head(StubEncoder(), None) == "emb"
    with pytest.raises(EvalError, match="no 'mmcl' output"):
        choose_head(StubEncoder(), "mmcl")


def test_cosine_classifier_logits_are_10_times_normalised_features_dot_rows_plus_bias():
    rows = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    head = CosineHead(2, 2, rows, torch.Generator().manual_seed(0))
    assert torch.equal(head.linear.bias.detach(), torch.zeros(2))
    features = torch.tensor([[3.0, 4.0], [0.0, -2.0]])  # unit: (0.6, 0.8) and (0, -1)
    with torch.no_grad():
        head.linear.bias.copy_(torch.tensor([0.5, -0.5]))
        got = head(features)
    # 10 x ((0.6, 0.36 + 0.64) + bias); 10 x ((0, -0.8) + bias): the bias is scaled too
    torch.testing.assert_close(got, torch.tensor([[11.0, 5.0], [5.0, -13.0]]))
    assert LOGIT_SCALE == 10.0


def test_knn_k_is_the_smaller_of_knn_k_and_the_shots_per_class():
    """2 shots per class, --knn-k 5: k = 2. The test point (1, 0) has neighbours class 0 at
    similarity 1.0 and -1.0, class 1 twice at 0.6, class 2 twice at -0.9. k = 2: votes 1.0
    (class 0) vs 0.6 (class 1) -> class 0. k = 5 would add 0.6 to class 1 (1.2) -> class 1."""
    feats = np.array(
        [[1, 0], [-1, 0], [0.6, 0.8], [0.6, -0.8], [-0.9, 0.436], [-0.9, -0.436], [1, 0]],
        np.float32,
    )
    imu = np.zeros((7, 6, 4), np.float32)
    imu[:, :2, 0] = feats
    labels = np.array([0, 0, 1, 1, 2, 2, 0])
    ws = WindowSet(imu, labels, ["a", "b", "c"], np.arange(7), dataset="toy")
    train, test = np.arange(6), np.array([6])

    def accuracy(knn_k: int, train_idx=train) -> float:
        s = EvalSettings(dataset="toy", mode="knn", knn_k=knn_k)
        s.check()
        system = EncoderSystem("stub", "model", StubEncoder(), ws, s, "knn", "emb", None, CPU, 0.1)
        return system.run(train_idx, test, seed=0)["accuracy"]

    assert accuracy(5) == 1.0  # k = min(5, 2) = 2: class 0
    assert accuracy(1) == 1.0
    # the hand computation's other branch: at k = 5 the vote goes to class 1
    from primus_core.evaluation.protocol import knn_predict

    assert (
        knn_predict(torch.from_numpy(feats[:6]), labels[:6], torch.from_numpy(feats[6:]), 5, 3)[0]
        == 1
    )
    # with 3 shots of class 1 (one more at 0.6): k = min(5, 3) = 3 -> 1.0 vs 0.6 + 0.6 -> class 1
    feats3 = np.vstack([feats[:6], [[0.6, 0.8]], feats[6:]]).astype(np.float32)
    imu3 = np.zeros((8, 6, 4), np.float32)
    imu3[:, :2, 0] = feats3
    ws = WindowSet(imu3, np.array([0, 0, 1, 1, 2, 2, 1, 0]), ["a", "b", "c"], np.arange(8))
    test = np.array([7])
    assert accuracy(5, np.arange(7)) == 0.0
    assert accuracy(2, np.arange(7)) == 1.0


def test_reference_validation_is_a_fifth_of_the_training_subjects_disjoint_from_shots_and_test():
    from primus_core.evaluation.protocol import validation_split

    classes = ["walking", "sitting", "lying_down"]
    for subjects, want in ((1, 0), (2, 1), (3, 1), (4, 1), (8, 2), (10, 2), (13, 3)):
        ws = synthetic_windows(classes, per_class=2 * subjects, subjects=subjects)
        train = np.arange(len(ws))
        kept, val = validation_split(ws, train, 0.2, seed=0)
        held = set(ws.subjects[val])
        assert len(held) == want == min(subjects - 1, max(1, round(0.2 * subjects))), subjects
        assert held.isdisjoint(ws.subjects[kept])
        assert len(val) == int(np.isin(ws.subjects, list(held)).sum())  # all their windows
    ws = synthetic_windows(classes, per_class=40, subjects=20)
    recorder = SplitRecorder("r", ws)
    s = EvalSettings(dataset="synthetic", shots=[2], seeds=3, protocol="reference")
    run_systems([recorder], ws, s, progress=False)
    val_sets = set()
    for shots, test, val in recorder.calls:
        test_subjects = set(ws.subjects[test])
        n = 20 - len(test_subjects)  # training subjects before validation
        val_subjects = set(ws.subjects[val])
        assert len(val_subjects) == round(0.2 * n)
        assert val_subjects.isdisjoint(test_subjects)
        assert val_subjects.isdisjoint(ws.subjects[shots])
        val_sets.add(tuple(sorted(val_subjects)))
    assert len(val_sets) > 1  # drawn per seed


def test_head_lr_is_1e3_from_text_1e2_from_random_and_lr_overrides_both(monkeypatch):
    from primus_core.evaluation.protocol import fit_head

    seen: list[list[tuple[float, float]]] = []
    step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        seen.append([(g["initial_lr"], g["weight_decay"]) for g in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(12, 4, generator=gen), torch.arange(12) % 3
    text = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    want = {(None, True): 1e-3, (None, False): 1e-2, (0.05, True): 0.05, (0.05, False): 0.05}
    for (lr, from_text), expected in want.items():
        seen.clear()
        s = EvalSettings(dataset="toy", lr=lr)
        s.check()
        fit_head(features, labels, 3, text if from_text else None, s, 0, CPU)
        assert len(seen) == 300  # max(20 epochs x 1 batch, --min-steps 300)
        assert {g for groups in seen for g in groups} == {(expected, 1e-4)}


def test_eval_settings_defaults():
    s = EvalSettings(dataset="watch-exercises")
    s.check()
    assert (s.epochs, s.min_steps, s.finetune_min_steps) == (20, 300, 50)
    assert (s.weight_decay, s.batch_size, s.encoder_lr, s.knn_k) == (1e-4, 256, 1e-4, 5)
    assert (s.mode, s.init, s.protocol, s.dtype, s.head, s.lr) == (
        "linear", "text", "primus", "fp32", None, None,
    )  # fmt: skip
    assert s.shots == [1, 2, 5, 10, 20] and s.seeds == 5 and s.test_fraction == 0.3
    from primus_core.evaluation.protocol import training_steps

    assert training_steps(40, s) == 300
    assert training_steps(40, s, s.finetune_min_steps) == 50
    assert training_steps(256 * 20, s) == 20 * 20  # 20 epochs of 20 batches pass the floor


def test_reference_protocol_ignores_lr_and_knn_is_the_same_under_both_protocols(watch):
    small = small_watch(watch, 8)
    model = tiny_model()
    common = {"dataset": "watch-exercises", "shots": [2], "seeds": 2}

    def accuracies(**kw) -> list[float]:
        result = evaluate(
            model, EvalSettings(**common, **kw), baselines=(), progress=False, windows=small
        )
        return [r["accuracy"] for r in result.runs]

    ref = accuracies(protocol="reference", epochs=5)
    assert accuracies(protocol="primus", epochs=5) != ref  # the two protocols do differ here
    for kw in ({"lr": 0.5}, {"min_steps": 1000}, {"batch_size": 2}, {"encoder_lr": 0.5}):
        assert accuracies(protocol="reference", epochs=5, **kw) == ref, kw
    # k-NN fits nothing: on the same shots and test windows both protocols predict alike (the
    # reference protocol only draws its shots without the validation subjects)
    train = np.flatnonzero(small.subjects % 3 != 0)
    test = np.flatnonzero(small.subjects % 3 == 0)
    shots = shot_indices(small, train, 2, seed=0)
    scores = []
    for protocol in ("primus", "reference"):
        s = EvalSettings(protocol=protocol, mode="knn", **common)
        s.check()
        system = EncoderSystem("t", "model", model.encoder, small, s, "knn", "emb", None, CPU, 0.1)
        scores.append(system.run(shots, test, seed=0))
    assert scores[0] == scores[1]


def test_baselines_untrained_seed_0_linear_under_finetune_scratch_lrs_classical_c(
    watch, monkeypatch
):
    from primus_core import create
    from primus_core.evaluation import baselines as baselines_module
    from primus_core.evaluation.protocol import baseline_systems, head_lr

    small = small_watch(watch)
    s = EvalSettings(dataset="watch-exercises", mode="finetune", shots=[2], seeds=1)
    s.check()
    untrained, scratch, classical = baseline_systems(tiny_model(seed=7), small, s, CPU)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = create("encoder", "stacked-rnn", **TINY)
    assert untrained.name == "untrained stacked-rnn" and untrained.kind == "baseline"
    assert untrained.mode == "linear" and untrained.describe()["init"] == "random"
    for system in (untrained, scratch):
        state = system.encoder.state_dict()
        assert all(torch.equal(state[k], v) for k, v in fresh.state_dict().items())
    assert scratch.name == "supervised from scratch" and scratch.mode == "finetune"
    assert scratch.head == "emb" and scratch.text_init is None
    assert scratch.encoder_lr == 1e-3 and head_lr(scratch.s, scratch.text_init) == 1e-2
    # under knn the untrained baseline runs knn too
    s_knn = EvalSettings(dataset="watch-exercises", mode="knn")
    s_knn.check()
    assert baseline_systems(tiny_model(), small, s_knn, CPU, ("untrained",))[0].mode == "knn"
    # the classical baseline: standardised features, logistic regression with C = 0.5
    fitted = []
    fit = baselines_module.fit_logreg

    def spy(*args, **kwargs):
        fitted.append(fit(*args, **kwargs))
        return fitted[-1]

    monkeypatch.setattr(baselines_module, "fit_logreg", spy)
    train = np.flatnonzero(small.subjects != small.subjects[0])
    test = np.flatnonzero(small.subjects == small.subjects[0])
    classical.run(train, test, seed=0)
    (scaler_name, _), (_, logreg) = fitted[0].steps
    assert scaler_name == "standardscaler" and logreg.C == 0.5
    assert classical.features.shape == (len(small), 96)


def test_classical_features_are_12_statistics_of_6_channels_and_2_magnitudes():
    t = np.arange(9, dtype=np.float64)
    window = np.zeros((1, 6, 9))
    window[0, 0:3] = np.array([3.0, 4.0, 0.0])[:, None]  # acc magnitude 5 throughout
    window[0, 3] = t**2 / 10  # gyro x
    window[0, 4] = np.sin(t)  # gyro y
    window[0, 5] = -2 * t  # gyro z
    from primus_core.evaluation.baselines import window_features

    got = window_features(np.vstack([window, 2 * window]).astype(np.float32))
    assert got.shape == (2, 96)
    series = [
        *window[0],
        np.full(9, 5.0),
        np.sqrt(window[0, 3] ** 2 + window[0, 4] ** 2 + window[0, 5] ** 2),
    ]
    want = []
    for x in series:
        d = np.diff(x)
        want += [x.mean(), x.std(), x.min(), x.max()]
        want += [np.percentile(x, p) for p in (10, 25, 50, 75, 90)]
        want += [np.mean(x**2), np.abs(d).mean(), d.std()]
    assert len(want) == 12 * 8 == 96
    np.testing.assert_allclose(np.sort(got[0]), np.sort(want), rtol=1e-5, atol=1e-5)
    assert 5.0 in np.round(got[0], 5) and 25.0 in np.round(got[0], 4)  # magnitude mean, energy


def test_models_switches_come_from_config_json(cli, tmp_path):
    from primus_core.zoo.modeldir import save_model_dir

    switches = {"losses": ["ss", "mm"], "nn_queue": False, "augment": "scale+permute"}
    encoder = untrained_encoder("stacked-rnn", TINY, seed=2)
    model_dir = save_model_dir(
        encoder,
        tmp_path / "tiny",
        encoder_type="stacked-rnn",
        encoder_params=TINY,
        extra_config={"switches": switches},
    )
    res = cli(
        "eval", model_dir, "--dataset", "basicmotions", "--mode", "knn", "--shots", "1",
        "--seeds", "1", "--no-baselines", "--json", "--no-progress",
    )  # fmt: skip
    assert json.loads(res.out)["models"][0]["switches"] == switches


def test_card_rows_reshape_the_summary_for_a_model_card():
    from primus_core.evaluation.protocol import EvalResult

    summary = [
        {"model": m, "mode": "linear", "shots": k, "n": 3, "accuracy_mean": a, "accuracy_std": 0.1,
         "macro_f1_mean": a - 0.1, "mean_class_accuracy_mean": a - 0.05}
        for m, k, a in (("tiny", 1, 0.5), ("tiny", 5, 0.7), ("classical", 1, 0.4))
    ]  # fmt: skip
    result = EvalResult("basicmotions", ["a"], 10, 2, {}, [], [], {}, 0.0, summary)
    assert result.card_rows("tiny") == [
        {"dataset": "basicmotions", "mode": "linear", "shots": k, "seeds": 3, "accuracy": a,
         "accuracy_std": 0.1, "macro_f1": a - 0.1, "mean_class_accuracy": a - 0.05}
        for k, a in ((1, 0.5), (5, 0.7))
    ]  # fmt: skip
    assert len(result.card_rows()) == 3


def test_prompt_teacher_is_explicit_else_the_models_else_minilm():
    from primus_core.evaluation.protocol import teacher_name_for

    model_teachers = ["openai/clip-vit-base-patch32|text"]
    assert teacher_name_for(model_teachers, "minilm-text") == "minilm-text"
    assert teacher_name_for(model_teachers, None) == "clip-text"
    assert teacher_name_for(["sentence-transformers/all-MiniLM-L6-v2|x"], None) == "minilm-text"
    assert teacher_name_for([], None) == "minilm-text"


def test_text_start_needs_the_teachers_size_else_random_with_an_init_note(watch):
    from primus_core.evaluation.protocol import build_model_system

    small = small_watch(watch)
    s = EvalSettings(dataset="watch-exercises", shots=[1], seeds=1)
    s.check()
    system = build_model_system(tiny_model(), small, s, CPU)  # mmcl has 16 dims, MiniLM 384
    info = system.describe()
    assert system.head == "mmcl" and system.text_init is None and info["init"] == "random"
    assert info["init_note"] == "head 'mmcl' has 16 dims, text teacher 'minilm-text' has 384"


def test_reference_finetune_trains_encoder_and_head_together_at_1e4(monkeypatch):
    seen: list[list[tuple[float, float, int]]] = []
    step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        groups = self.param_groups
        seen.append([(g["initial_lr"], g["weight_decay"], len(g["params"])) for g in groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    ws = synthetic_windows(["walking", "sitting"], per_class=4, subjects=4)
    encoder = untrained_encoder("stacked-rnn", TINY, seed=1)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    s = EvalSettings(dataset="synthetic", mode="finetune", protocol="reference", epochs=1)
    s.check()
    s.lr, s.encoder_lr = 0.5, 0.5  # primus options: no effect on the reference protocol
    system = EncoderSystem("t", "model", encoder, ws, s, "finetune", "emb", None, CPU, 0.5)
    system.run(np.arange(6), np.arange(6, 8), seed=0, val_idx=np.zeros(0, np.int64))
    encoder_params = len(list(encoder.parameters()))
    assert seen == [[(1e-4, 1e-4, encoder_params + 2)]]  # one group: encoder + head w, b
    # the caller's encoder is a copy's starting point, never trained in place
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in before.items())


def test_a_dataset_plugin_ships_its_own_prompts_module(tmp_path, monkeypatch):
    """A dataset registered from package P uses P.prompts.CLASS_PROMPTS[dataset]; a class it
    does not name gets the templates; a --prompts override still wins."""
    from primus_core.components import Component, NoParams, registry

    package = tmp_path / "toy_prompts_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text("class ToyAdapter:\n    pass\n")
    (package / "prompts.py").write_text(
        "CLASS_PROMPTS = {'toyset': {'jumping': ['a person jumping', 'jumping up and down']}}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    component = Component(
        "dataset", "toyset", "toy_prompts_plugin.adapter:ToyAdapter", NoParams, "toy"
    )
    monkeypatch.setitem(registry()["dataset"], "toyset", component)
    got = class_prompts("toyset", ["jumping", "resting"])
    assert got[0] == ["a person jumping", "jumping up and down"]
    assert got[1][:2] == ["resting", "a person is resting"]  # templates
    override = class_prompts("toyset", ["jumping"], {"jumping": ["hopping"]})
    assert override == [["hopping"]]
