"""The transfer-gap study (primus_core/transfer_gap.py): input transforms and a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from primus_core.data.windows import WindowSet
from primus_core.evaluation.transfer_gap import channel_stats, main, transform_inputs


def windows(mean: float, std: float, seed: int) -> WindowSet:
    rng = np.random.default_rng(seed)
    imu = (rng.normal(mean, std, (20, 6, 50)) + np.arange(6)[None, :, None]).astype(np.float32)
    return WindowSet(imu, np.zeros(20, np.int64), ["a"], np.zeros(20, np.int64), dataset="t")


def test_inputs_standardised_to_the_source_or_centred():
    target, source = windows(9.8, 3.0, 0), windows(0.0, 0.5, 1)
    out = transform_inputs(target, "standardise", source)
    for got, want in zip(channel_stats(out), channel_stats(source), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    centred = transform_inputs(target, "centre")
    assert np.abs(centred.imu.mean(axis=2)).max() < 1e-4
    assert centred.imu.std() == pytest.approx(target.imu.std(axis=2).mean(), rel=0.05)
    assert transform_inputs(target, "as-is") is target
    with pytest.raises(ValueError, match="unknown input transform"):
        transform_inputs(target, "rotate")


def test_tiny_gap_study_writes_every_variant(tmp_path, capsys):
    code = main(
        [
            "--model",
            "random:stacked-rnn",
            "--datasets",
            "basicmotions",
            "--shots",
            "1",
            "--seeds",
            "1",
            "--min-steps",
            "5",
            "--variants",
            "default,protocol=reference,input=centre",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "transfer_gap.json").read_text())
    variants = [r["variant"] for r in report["rows"]]
    assert variants == ["default", "protocol=reference", "input=centre"]
    assert all(0 <= r["encoder"] <= 1 and 0 <= r["classical"] <= 1 for r in report["rows"])
    assert "| basicmotions | default |" in (tmp_path / "transfer_gap.md").read_text()
    assert main(["--model", "random:stacked-rnn", "--shots", "x", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_gap_is_classical_minus_encoder_on_the_transformed_windows_with_the_defaults(
    tmp_path, monkeypatch
):
    """evaluate() (and the datasets) are replaced by stand-ins whose accuracies are known: call i scores the encoder
    0.5 and 0.5 + 0.02 i, the classical baseline 0.8 and 0.9. So encoder = 0.5 + 0.01 i,
    classical = 0.85, gap = 0.35 - 0.01 i, change of gap = -0.01 i (points: -1.0 x i)."""
    from types import SimpleNamespace

    from primus_core.evaluation import transfer_gap

    calls = []

    def fake_evaluate(model, settings, baselines, progress, windows):
        i = len(calls)
        calls.append((settings, list(baselines), windows))
        runs = [
            {"kind": "model", "accuracy": 0.5},
            {"kind": "model", "accuracy": 0.5 + 0.02 * i},
            {"kind": "baseline", "accuracy": 0.8},
            {"kind": "baseline", "accuracy": 0.9},
        ]
        return SimpleNamespace(runs=runs, seconds=0.0)

    monkeypatch.setattr(transfer_gap, "evaluate", fake_evaluate)
    data = {"hapt": windows(0.0, 0.5, 1), "basicmotions": windows(9.8, 3.0, 0)}
    monkeypatch.setattr(transfer_gap, "prepare_dataset", lambda name, *a, **k: data[name])
    args = ["--model", "random:stacked-rnn", "--longer", "random:stacked-rnn"]
    assert main([*args, "--datasets", "basicmotions", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "transfer_gap.json").read_text())
    names = [r["variant"] for r in report["rows"]]
    assert names == [
        "default",
        "head=emb",
        "head=mmcl",
        "head=ssl",
        "protocol=reference",
        "input=standardise",
        "input=centre",
        "head=ssl+input=standardise",
        "model=longer",
        "model=longer+head=ssl",
    ]
    for i, row in enumerate(report["rows"]):
        assert row["encoder"] == pytest.approx(0.5 + 0.01 * i)
        assert row["classical"] == pytest.approx(0.85)
        assert row["gap"] == pytest.approx(0.35 - 0.01 * i)
    # the defaults: 1 and 5 shots, 3 seeds; the classical baseline runs next to every variant
    for settings, baselines, _ in calls:
        assert settings.shots == [1, 5] and settings.seeds == 3 and baselines == ["classical"]
    assert report["shots"] == [1, 5] and report["seeds"] == 3
    heads = {r["variant"]: s.head for r, (s, _, _) in zip(report["rows"], calls, strict=True)}
    assert heads["head=ssl"] == heads["head=ssl+input=standardise"] == "ssl"
    assert heads["default"] is None
    assert calls[4][0].protocol == "reference"
    # both systems are scored on the transformed windows: centred per window and channel
    centred = calls[names.index("input=centre")][2]
    assert np.abs(centred.imu.mean(axis=2)).max() < 1e-4
    raw = calls[0][2]
    assert raw is data["basicmotions"]  # as-is
    standardised = calls[names.index("input=standardise")][2]
    for got, want in zip(channel_stats(standardised), channel_stats(data["hapt"]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # to the source's statistics
    # the markdown: gap and change of gap in points, the change against the default row
    text = (tmp_path / "transfer_gap.md").read_text()
    assert "| basicmotions | default | 0.500 | 0.850 | +35.0 | +0.0 |" in text
    assert "| basicmotions | input=centre | 0.560 | 0.850 | +29.0 | -6.0 |" in text
    assert "| basicmotions | model=longer+head=ssl | 0.590 | 0.850 | +26.0 | -9.0 |" in text
