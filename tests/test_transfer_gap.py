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
