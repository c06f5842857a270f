import numpy as np
import pytest
import torch

import primus_core
from primus_core.modeldir import save_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(1)
    encoder = primus_core.create("encoder", "stacked-rnn")
    path = tmp_path_factory.mktemp("m") / "model"
    return save_model_dir(encoder, path, encoder_type="stacked-rnn", encoder_params={})


def reference_embedding(model_dir, windows, head="mmcl"):
    encoder = primus_core.load_pretrained(model_dir)
    with torch.no_grad():
        return encoder(torch.from_numpy(windows.astype(np.float32)))[head].numpy()


def test_embed_windows_npy(cli, model_dir, tmp_path):
    windows = np.random.default_rng(0).normal(size=(7, 6, 250)).astype(np.float32)
    np.save(tmp_path / "x.npy", windows)
    result = cli(
        "embed",
        model_dir,
        tmp_path / "x.npy",
        "--head",
        "emb",
        "--out",
        tmp_path / "e.npy",
        "--batch-size",
        "3",
    )
    assert result.out.strip().endswith("7x512")
    got = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(got, reference_embedding(model_dir, windows, "emb"), atol=1e-5)


def test_embed_recording_csv_with_resampling(cli, model_dir, tmp_path):
    t = np.arange(1000) / 100.0  # 10 s at 100 Hz
    recording = np.stack([np.sin(2 * np.pi * f * t) for f in (1, 2, 3, 0.5, 1.5, 2.5)], axis=1)
    lines = ["acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"]
    lines += [",".join(f"{v:.6f}" for v in row) for row in recording]
    (tmp_path / "rec.csv").write_text("\n".join(lines) + "\n")
    cli("embed", model_dir, tmp_path / "rec.csv", "--rate", "100", "--out", tmp_path / "e.npy")
    got = np.load(tmp_path / "e.npy")
    assert got.shape == (2, 512)  # 10 s at 50 Hz = 500 samples = two 5 s windows


def test_npz_key(cli, model_dir, tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros((2, 6, 250)), b=np.ones((6, 300)))
    cli("embed", model_dir, tmp_path / "x.npz", "--out", tmp_path / "e.npy", expect=1)
    cli("embed", model_dir, tmp_path / "x.npz", "--key", "b", "--out", tmp_path / "e.npy")
    assert np.load(tmp_path / "e.npy").shape == (1, 512)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 250)), "input has 3 channels"),
        (np.full((1, 6, 250), np.nan), "NaN/inf values"),
        (np.zeros((0, 6, 250)), "input is empty"),
        (np.zeros((1, 6, 100)), "input has 100 samples at 50 Hz; a window needs 250"),
        (np.zeros(250), "expected (N, C, T) or (C, T)"),
    ],
)
def test_bad_input_is_one_clear_line(cli, model_dir, tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    result = cli("embed", model_dir, tmp_path / "x.npy", "--out", tmp_path / "e.npy", expect=1)
    assert message in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "e.npy").exists()


def test_bad_csv_names_the_line(cli, model_dir, tmp_path):
    (tmp_path / "r.csv").write_text("1,2,3,4,5,6\n1,2,3,4,5\n")
    result = cli("embed", model_dir, tmp_path / "r.csv", "--out", tmp_path / "e.npy", expect=1)
    assert "r.csv:2: 5 columns, expected 6" in result.err
    result = cli(
        "embed", tmp_path / "nomodel", tmp_path / "r.csv", "--out", tmp_path / "e.npy", expect=1
    )
    assert "nomodel" in result.err
