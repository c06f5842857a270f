import numpy as np
import pytest
import torch

import primus_core
from primus_core.zoo.modeldir import save_model_dir


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


# ---------------------------------------------------------------- issue 13 (items 2, 6, 7, 9)
def one_error_line(result) -> str:
    lines = result.err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.err
    assert "Traceback" not in result.err, result.err
    assert sum(line.startswith("error:") for line in lines) == 1, result.err  # (after progress)
    return lines[-1]


def embed_cli(cli, model_dir, path, *extra, expect=0, out=None):
    out = out or path.with_name("e.npy")
    return cli("embed", model_dir, path, "--out", out, *extra, expect=expect)


def test_no_silent_nan_embeddings(cli, model_dir, tmp_path):
    """Item 2: float64 beyond float32's range, and float32 near its maximum (finite input, NaN
    output), both end in one error line instead of all-NaN embeddings with exit 0."""
    np.save(tmp_path / "x.npy", np.full((1, 6, 250), 1e300))
    assert "float32 overflow" in one_error_line(
        embed_cli(cli, model_dir, tmp_path / "x.npy", expect=1)
    )
    np.save(tmp_path / "x.npy", np.full((2, 6, 250), np.finfo(np.float32).max, np.float32))
    line = one_error_line(embed_cli(cli, model_dir, tmp_path / "x.npy", expect=1))
    assert "NaN/inf embeddings for 2 of 2 windows" in line
    assert not (tmp_path / "e.npy").exists()
    # the API says the same
    from primus_core.data.embed import embed_windows
    from primus_core.errors import DataError

    encoder = primus_core.load_pretrained(model_dir)
    with pytest.raises(DataError, match="NaN/inf embeddings"):
        embed_windows(encoder, np.full((1, 6, 250), 3e38, np.float32))


def test_weights_with_nan_are_refused_at_load(cli, model_dir, tmp_path):
    """Item 2: NaN weights used to give NaN embeddings (and an accuracy from `primus eval`)."""
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    state = load_file(str(bad / "model.safetensors"))
    name = sorted(state)[3]
    state[name][0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 250), np.float32))
    line = one_error_line(embed_cli(cli, bad, tmp_path / "x.npy", expect=1))
    assert "weights hold NaN/inf values" in line and name in line
    with pytest.raises(primus_core.errors.ModelDirError, match="NaN/inf"):
        primus_core.load_pretrained(bad)
    from primus_core.evaluation.protocol import load_model  # what `primus eval` loads a model with

    with pytest.raises(primus_core.errors.ModelDirError, match="NaN/inf"):
        load_model(str(bad))


def write_npz_with_object_array(path):
    np.savez(path, x=np.array([np.zeros(3), "a"], dtype=object))


@pytest.mark.parametrize(
    "name, writer, message",
    [
        ("empty.npy", lambda p: p.write_bytes(b""), "not a readable numeric .npy"),
        ("cut.npy", lambda p: p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr'"), ".npy"),
        ("obj.npz", write_npz_with_object_array, "not a readable numeric .npz"),
        ("zip.npz", lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), ".npz"),
        ("latin1.csv", lambda p: p.write_bytes("1,2,3,4,5,\xe9\n".encode("latin-1")), "UTF-8"),
        (
            "typo.csv",
            lambda p: p.write_text("1,2,3,4,5,6x\n" + "1,2,3,4,5,6\n" * 300),
            "typo.csv:1",
        ),
        ("complex.npy", lambda p: np.save(p, np.ones((1, 6, 250), np.complex64)), "complex"),
    ],
)
def test_malformed_files_are_one_error_line(cli, model_dir, tmp_path, name, writer, message):
    """Items 6 and 7: unreadable inputs used to end in a traceback (a 0-byte .npy in exit 130
    "aborted"); complex input lost its imaginary part; a typo in the first row made it a header."""
    writer(tmp_path / name)
    line = one_error_line(embed_cli(cli, model_dir, tmp_path / name, expect=1))
    assert message in line, line


def test_csv_with_a_bom_keeps_its_first_row(cli, model_dir, tmp_path):
    rows = np.random.default_rng(0).normal(size=(250, 6))
    text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows) + "\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    embed_cli(cli, model_dir, tmp_path / "bom.csv")  # 250 rows: one window only if none is lost
    expected = reference_embedding(model_dir, rows.T[None].astype(np.float32))
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-5)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--rate", "-5", "--rate"),
        ("--rate", "nan", "--rate"),
        ("--rate", "0", "--rate"),
        ("--stride", "-1", "--stride"),
        ("--stride", "0", "--stride"),
        ("--batch-size", "0", "--batch-size"),
        ("--batch-size", "-3", "--batch-size"),
        ("--device", "cuda:99", "--device"),
        ("--device", "tpu", "--device"),
    ],
)
def test_bad_option_values_are_refused(cli, model_dir, tmp_path, option, value, message):
    """Items 6 and 7: negative/nan/zero rates and strides, zero batches, missing devices."""
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 500), np.float32))
    line = one_error_line(embed_cli(cli, model_dir, tmp_path / "x.npy", option, value, expect=2))
    assert message in line


def test_api_refuses_zero_rate_and_stride():
    from primus_core.data.embed import prepare_windows
    from primus_core.errors import DataError

    x = np.zeros((6, 500), np.float32)
    for kwargs, message in [({"input_rate_hz": 0.0}, "rate"), ({"stride": 0}, "stride")]:
        with pytest.raises(DataError, match=message):
            prepare_windows(x, channels=6, window=250, rate_hz=50.0, **kwargs)


def test_the_smallest_stride_and_a_rate_below_1_hz_are_accepted():
    """The bounds just inside the refusals above: stride 1 (every sample starts a window) and
    any positive rate (0.5 Hz upsampled 100x to 50 Hz)."""
    from primus_core.data.embed import prepare_windows

    x = np.arange(6 * 252, dtype=np.float32).reshape(6, 252)
    every = prepare_windows(x, channels=6, window=250, rate_hz=50.0, stride=1)
    assert every.shape == (3, 6, 250) and every[2, 0, 0] == x[0, 2]
    slow = prepare_windows(np.ones((6, 5)), channels=6, window=250, rate_hz=50.0, input_rate_hz=0.5)
    assert slow.shape == (2, 6, 250)


def test_out_must_be_a_writable_file(cli, model_dir, tmp_path):
    """Item 6: --out an existing folder, or under a file."""
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 250), np.float32))
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "folder", tmp_path / "afile" / "e.npy"):
        line = one_error_line(embed_cli(cli, model_dir, tmp_path / "x.npy", out=out, expect=2))
        assert "--out" in line


@pytest.mark.parametrize(
    "encoder, message",
    [
        ("stacked-rnn", "'encoder' must be a mapping"),
        ({"params": {}}, "'encoder' must be a mapping with a 'type'"),
        ({"type": "stacked-rnn", "params": [1, 2]}, "'encoder.params' must be a mapping"),
    ],
)
def test_config_encoder_shape_is_checked(cli, model_dir, tmp_path, encoder, message):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "encoder": encoder}))
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 250), np.float32))
    assert message in one_error_line(embed_cli(cli, bad, tmp_path / "x.npy", expect=1))


@pytest.mark.parametrize(
    "key, change",
    [
        ("imu_contract", {"window_samples": 100}),
        ("imu_contract", {"rate_hz": 25.0}),
        ("output_sizes", {"mmcl": 7}),
    ],
)
def test_config_contract_and_sizes_checked_against_the_encoder(model_dir, tmp_path, key, change):
    """Item 7: config.json's imu_contract and output_sizes used to be taken on trust."""
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config[key] = {**config[key], **change}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(primus_core.errors.ModelDirError, match=f"'{key}' says"):
        primus_core.load_pretrained(bad)


def test_model_folder_modes_follow_the_umask(model_dir):
    """Item 9: model folders were 0700 with weights 0600."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(model_dir).st_mode) == 0o777 & ~mask
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE(os.stat(model_dir / name).st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_embed_dtype_option(cli, model_dir, tmp_path, dtype):
    windows = np.random.default_rng(2).normal(size=(4, 6, 250)).astype(np.float32)
    np.save(tmp_path / "x.npy", windows)
    out = tmp_path / f"{dtype}.npy"
    cli("embed", model_dir, tmp_path / "x.npy", "--out", out, "--dtype", dtype)
    got, ref = np.load(out), reference_embedding(model_dir, windows)
    assert got.dtype == np.float32 and got.shape == ref.shape
    cosine = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.95
    result = cli("embed", model_dir, tmp_path / "x.npy", "--out", out, "--dtype", "fp8", expect=2)
    assert "fp8" in result.err
