"""primus_core.embed: the Python form of `primus embed` (resampling, layout, windowing, heads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import primus_core
from primus_core.data.embed import prepare_windows
from primus_core.errors import DataError

MODEL = Path(__file__).resolve().parents[1] / "zoo" / "primus-hapt-stackrnn"


def recording_100hz_tc(seconds: float = 12.0) -> np.ndarray:
    """A (T, C) recording at 100 Hz: smooth signals, gravity on z."""
    t = np.arange(int(seconds * 100)) / 100
    acc = np.stack([np.sin(2 * np.pi * 1.5 * t), np.cos(2 * np.pi * t), 9.81 + 0 * t])
    gyro = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (0.5, 1.0, 2.0)])
    return np.concatenate([acc, gyro]).T.astype(np.float64)


def test_embed_api_on_100hz_tc_data_matches_the_cli(tmp_path, cli):
    data = recording_100hz_tc()
    vectors = primus_core.embed(str(MODEL), data, rate_hz=100, layout="TC", head="emb", stride=125)
    np.save(tmp_path / "x.npy", data.T)  # the CLI reads (C, T)
    out = tmp_path / "e.npy"
    cli(
        "embed",
        MODEL,
        tmp_path / "x.npy",
        "--rate",
        "100",
        "--head",
        "emb",
        "--stride",
        "125",
        "--out",
        out,
        "--device",
        "cpu",
    )
    expected = np.load(out)
    # 12 s at 100 Hz -> 600 samples at 50 Hz; windows of 250 every 125: 3
    assert vectors.shape == expected.shape == (3, 512)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-5)
    encoder = primus_core.load_pretrained(MODEL)
    same = primus_core.embed(encoder, data.T, rate_hz=100, head="emb", stride=125)
    np.testing.assert_allclose(same, vectors, rtol=1e-5, atol=1e-5)


def test_a_transposed_array_gets_a_hint():
    with pytest.raises(DataError, match=r"6000 channels.*looks like \(T, C\).*layout='TC'"):
        prepare_windows(np.zeros((6000, 6)), channels=6, window=250, rate_hz=50)
    with pytest.raises(DataError, match="layout must be"):
        primus_core.embed(str(MODEL), np.zeros((6, 300)), layout="NCT")


def test_a_missing_rate_is_warned_when_the_length_suggests_another(tmp_path, cli, caplog):
    windows = np.zeros((2, 6, 500), dtype=np.float32)
    with pytest.warns(UserWarning, match="pass --rate 100"):
        primus_core.embed(str(MODEL), windows)
    np.save(tmp_path / "w.npy", windows)
    result = cli("embed", MODEL, tmp_path / "w.npy", "--out", tmp_path / "o.npy")
    assert "pass --rate 100" in result.err + caplog.text
