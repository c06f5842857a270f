"""primus_core.embed: the Python form of `primus embed` (resampling, layout, windowing, heads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hubserver import free_port, local_hub  # noqa: F401  (the session-scoped fixture)

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


@pytest.mark.parametrize("rate", [-5.0, float("nan"), float("inf"), float("-inf")])
def test_embed_api_refuses_a_negative_nan_or_infinite_rate(rate):
    """A rate that is not a finite number > 0 is one clear DataError, never a resampling of
    NaN length or a silently ignored rate."""
    encoder = primus_core.load_pretrained(MODEL)
    with pytest.raises(DataError, match="input rate must be a positive number of Hz") as info:
        primus_core.embed(encoder, recording_100hz_tc(), rate_hz=rate, layout="TC")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="input rate must be a positive number of Hz"):
        prepare_windows(np.zeros((6, 600)), channels=6, window=250, rate_hz=50, input_rate_hz=rate)


def test_embed_api_defaults_to_the_mmcl_head_and_accepts_a_zoo_name():
    """``primus_core.embed("ZOO-NAME", windows)`` without ``head`` gives the encoder's ``mmcl``
    output, computed here by a direct forward pass of the model folder's encoder."""
    import torch

    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, 6, 250)).astype(np.float32)
    encoder = primus_core.load_pretrained(MODEL)
    with torch.no_grad():
        outputs = encoder(torch.from_numpy(windows))
    expected = outputs["mmcl"].numpy()
    assert expected.shape == (3, 384) and outputs["emb"].shape == (3, 512)  # the heads differ
    vectors = primus_core.embed("primus-hapt-stackrnn", windows, rate_hz=50)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-5)


def test_input_is_checked_for_nan_inf_after_resampling(tmp_path, cli):
    """Finite float32 input whose resampled form overshoots float32 (a step from -0.95 to +0.95
    of its maximum rings by ~9 %) is one error, API and CLI, never NaN windows or a file."""
    from scipy.signal import resample_poly

    top = np.finfo(np.float32).max
    data = np.full((6, 1000), 0.95 * top, dtype=np.float32)
    data[:, 500:] *= -1
    assert np.isfinite(data).all()
    overshoot = np.abs(resample_poly(data.astype(np.float64), 1, 2, axis=-1, padtype="line"))
    assert overshoot.max() > top  # the oracle: resampled, it no longer fits in float32
    with pytest.raises(DataError, match="input resampled to float32 has .* NaN/inf values"):
        primus_core.embed(str(MODEL), data, rate_hz=100)
    np.save(tmp_path / "x.npy", data)
    out = tmp_path / "e.npy"
    result = cli("embed", MODEL, tmp_path / "x.npy", "--rate", "100", "--out", out, expect=1)
    (line,) = result.err.strip().splitlines()
    assert line.startswith("error: ") and "resampled to float32" in line
    assert not out.exists()


def test_hub_ids_and_zoo_names_work_in_embed_and_eval_and_offline_from_the_cache(
    local_hub,  # noqa: F811
    tmp_path,
    monkeypatch,
    cli,
):
    """``primus_core.embed("hf-hub:ORG/NAME", x)`` pulls from the Hub (a local olah) and gives
    the ``mmcl`` head by default; then, with the Hub unreachable, ``--offline`` and
    ``HF_HUB_OFFLINE=1`` use the Hub cache only (pinned, and unpinned once pulled online), as
    does ``primus eval`` given the id; ``eval`` and ``embed`` take a zoo name too; a repo never
    pulled is one clear error."""
    import torch

    from primus_core.zoo.modeldir import save_model_dir

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    params = {"conv_channels": 8, "hidden_size": 16, "ssl_dim": 0, "mmcl_dim": 8}
    torch.manual_seed(0)
    encoder = primus_core.create("encoder", "stacked-rnn", **params).eval()
    folder = save_model_dir(
        encoder, tmp_path / "src", encoder_type="stacked-rnn", encoder_params=params
    )
    repo_id = f"primus-test/embed-api-{tmp_path.name[-12:].strip('_-')}"
    sha = local_hub.add_repo(repo_id, folder)
    monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)
    windows = np.random.default_rng(1).normal(size=(2, 6, 250)).astype(np.float32)
    np.save(tmp_path / "w.npy", windows)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(windows))["mmcl"].numpy()
    assert expected.shape == (2, 8)
    np.testing.assert_allclose(
        primus_core.embed(f"hf-hub:{repo_id}", windows), expected, rtol=1e-5, atol=1e-6
    )

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    snapshot = tmp_path / "hf" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha
    pulled = cli("zoo", "pull", f"hf-hub:{repo_id}@{sha}", "--offline")
    assert Path(pulled.out.strip()) == snapshot
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_allclose(
        primus_core.embed(f"hf-hub:{repo_id}@{sha}", windows), expected, rtol=1e-5, atol=1e-6
    )
    # the unpinned id pulled online above: its branch was recorded, so it is found offline too
    assert Path(cli("zoo", "pull", f"hf-hub:{repo_id}").out.strip()) == snapshot
    # `primus eval` takes the Hub id too (from the cache here): the same runs as the folder's
    args = ["--dataset", "basicmotions", "--shots", "1", "--seeds", "1", "--min-steps", "5"]
    args += ["--no-baselines", "--json", "--no-progress"]
    by_id = json.loads(cli("eval", f"hf-hub:{repo_id}@{sha}", *args).out)
    by_folder = json.loads(cli("eval", folder, *args).out)
    assert by_id["models"][0]["source"] == str(snapshot)
    assert by_id["models"][0]["name"] == f"hf-hub:{repo_id}@{sha}"

    def scores(report):
        return [{k: v for k, v in run.items() if k != "model"} for run in report["runs"]]

    assert scores(by_id) == scores(by_folder) and len(by_id["runs"]) == 1
    # and a zoo name: the same folder shipped under a name in a PRIMUS_REGISTRY file
    import hashlib
    import uuid

    import yaml

    files = {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
        for n in ("model.safetensors", "config.json", "README.md")
    }
    entry = {"description": "d", "source": {"shipped": "src"}, "files": files, "licence": "cc0"}
    registry = tmp_path / "registry.yaml"
    name = f"tiny-by-name-{uuid.uuid4().hex[:8]}"  # new in a home kept across sessions too
    registry.write_text(yaml.safe_dump({"zoo": {name: entry}}))
    monkeypatch.setenv("PRIMUS_REGISTRY", str(registry))
    by_name = json.loads(cli("eval", name, *args).out)
    assert by_name["models"][0]["name"] == name
    assert scores(by_name) == scores(by_folder)
    cli("embed", name, tmp_path / "w.npy", "--out", tmp_path / "e.npy")
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, rtol=1e-5, atol=1e-6)
    missing = cli("zoo", "pull", "hf-hub:primus-test/never-pulled", expect=1)
    (line,) = missing.err.strip().splitlines()
    assert line == (
        "error: offline, and hf-hub:primus-test/never-pulled@main is not in the Hub cache"
    )
