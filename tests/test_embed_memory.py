"""Embedding a large input: read through a memory map, checked a block at a time, cut into
windows as views, converted batch by batch, and no batch's outputs kept (`primus embed` on
100,000 windows took 4.6 GB of anonymous memory in int8 before, 0.5 GB after)."""

import gc
import weakref

import numpy as np
import pytest
import torch

import primus_core.data.embed as embed_module
from primus_core.data.embed import (
    batched_outputs,
    check_finite,
    embed_windows,
    prepare_windows,
    read_input,
)
from primus_core.data.gru_scan import gru_scan
from primus_core.errors import DataError, PrimusError


def test_the_scan_last_state_is_its_own_tensor():
    """h_n as a view of all states kept them alive (17 MB per batch of 256 at hidden 512)."""
    gru = torch.nn.GRU(5, 8, batch_first=True)
    output, last = gru_scan(gru, torch.randn(3, 7, 5))
    assert last.untyped_storage().nbytes() == last.numel() * last.element_size()
    torch.testing.assert_close(last[0], output[:, -1])


class ViewsOfBigTensors(torch.nn.Module):
    """An encoder whose output is a view of a large tensor made for each call; it records, at
    each call, how many earlier calls' large tensors are still alive."""

    output_sizes = {"emb": 4}

    def __init__(self):
        super().__init__()
        self.earlier: list[weakref.ref] = []
        self.alive_at_calls: list[int] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        gc.collect()
        self.alive_at_calls.append(sum(ref() is not None for ref in self.earlier))
        big = torch.zeros(64, len(x), 4)
        big[-1] = x[:, 0, :4]
        self.earlier.append(weakref.ref(big))
        return {"emb": big[-1]}


def test_no_batch_output_is_kept_while_embedding():
    encoder = ViewsOfBigTensors()
    windows = np.random.default_rng(0).normal(size=(10, 2, 6)).astype(np.float32)
    vectors = batched_outputs(encoder, windows, "emb", batch_size=3, device=torch.device("cpu"))
    assert encoder.alive_at_calls == [0, 0, 0, 0]
    np.testing.assert_array_equal(vectors, windows[:, 0, :4])


def test_an_output_of_another_size_than_declared_is_one_clear_error():
    encoder = ViewsOfBigTensors()
    encoder.output_sizes = {"emb": 5}
    with pytest.raises(PrimusError, match=r"'emb' output has shape \(3, 4\).*declares 5"):
        batched_outputs(encoder, np.zeros((3, 2, 6), np.float32), "emb", 3, torch.device("cpu"))


def test_npy_input_is_memory_mapped_and_embeds_as_in_memory(tmp_path):
    import primus_core

    torch.manual_seed(0)
    encoder = primus_core.create("encoder", "stacked-rnn")
    windows = np.random.default_rng(1).normal(size=(5, 6, 250))  # float64: converted per batch
    np.save(tmp_path / "x.npy", windows)
    mapped = read_input(tmp_path / "x.npy")
    assert isinstance(mapped, np.memmap)
    prepared = prepare_windows(mapped, channels=6, window=250, rate_hz=50.0)
    assert np.shares_memory(prepared, mapped)  # no copy of the input
    got = embed_windows(encoder, prepared, head="emb", batch_size=2)
    expected = embed_windows(encoder, windows.astype(np.float32), head="emb", batch_size=5)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_overlapping_windows_of_a_recording_are_views():
    recording = np.arange(2 * 20, dtype=np.float64).reshape(2, 20)
    windows = prepare_windows(recording, channels=2, window=8, rate_hz=50.0, stride=3)
    expected = np.stack([recording[:, s : s + 8] for s in range(0, 13, 3)])
    np.testing.assert_array_equal(windows, expected)
    assert np.shares_memory(windows, recording)
    by_default = prepare_windows(recording, channels=2, window=8, rate_hz=50.0)
    np.testing.assert_array_equal(by_default, np.stack([recording[:, :8], recording[:, 8:16]]))


@pytest.mark.parametrize("shape", [(9, 3, 7), (3, 40)])
@pytest.mark.parametrize("block_bytes", [1, 8 * 5, 1 << 20])
def test_checks_by_blocks_count_and_locate_as_over_the_whole(shape, block_bytes, monkeypatch):
    """The count and the first index (in C order) whatever the block size, for NaN/inf and
    for float64 values beyond float32's range."""
    monkeypatch.setattr(embed_module, "CHECK_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = rng.normal(size=shape)
        flat = x.reshape(-1)
        bad = rng.choice(flat.size, size=int(rng.integers(1, 6)), replace=False)
        flat[bad] = rng.choice([np.nan, np.inf, -np.inf, 1e39, -1e40], size=len(bad))
        first = tuple(int(i) for i in np.unravel_index(bad.min(), shape))
        over = np.isfinite(flat[bad])  # 1e39, -1e40: finite in float64 only
        nonfinite = int((~over).sum())
        if nonfinite:
            with pytest.raises(DataError, match=rf"input has {nonfinite} NaN/inf values"):
                check_finite(x, "input has")
        else:
            check_finite(x, "input has")
        message = rf"overflow: {len(bad)} NaN/inf values \(first at index \({', '.join(map(str, first))}\)\)"
        with pytest.raises(DataError, match=message):
            check_finite(x, "overflow:", as_float32=True)


def test_a_float64_input_beyond_float32_is_refused_before_embedding():
    x = np.zeros((2, 6, 250))
    x[1, 2, 3] = 1e39
    with pytest.raises(
        DataError, match=r"float32 overflow: 1 NaN/inf values \(first at index \(1, 2, 3\)\)"
    ):
        prepare_windows(x, channels=6, window=250, rate_hz=50.0)


# ---------------------------------------------------------------- written from surviving mutants
@pytest.fixture(scope="module")
def encoder():
    import primus_core

    torch.manual_seed(0)
    return primus_core.create("encoder", "stacked-rnn", conv_channels=8, hidden_size=16)


def test_a_batch_of_one_window_gives_the_same_vectors(encoder):
    windows = np.random.default_rng(3).normal(size=(3, 6, 250)).astype(np.float32)
    one = embed_windows(encoder, windows, head="emb", batch_size=1)
    np.testing.assert_allclose(one, embed_windows(encoder, windows, head="emb"), atol=1e-6)


def test_no_progress_bar_unless_asked(encoder, capsys):
    windows = np.zeros((2, 6, 250), np.float32)
    embed_windows(encoder, windows, head="emb")
    batched_outputs(encoder, windows, "emb", 1, torch.device("cpu"))
    assert capsys.readouterr().err == ""
    embed_windows(encoder, windows, head="emb", progress=True)
    assert "embed" in capsys.readouterr().err


def test_the_nan_embedding_error_names_the_first_bad_window(encoder):
    windows = np.random.default_rng(4).normal(size=(3, 6, 250)).astype(np.float32)
    windows[1:] = np.finfo(np.float32).max  # finite input whose embedding is not
    with pytest.raises(DataError, match=r"for 2 of 3 windows \(first: window 1, whose largest"):
        embed_windows(encoder, windows, head="emb")


def test_a_short_input_says_how_long_a_window_is():
    with pytest.raises(DataError, match=r"100 samples at 50 Hz; a window needs 250 \(5 s\)"):
        prepare_windows(np.zeros((6, 100)), channels=6, window=250, rate_hz=50.0)


def test_a_csv_row_of_empty_cells_is_skipped(tmp_path):
    (tmp_path / "r.csv").write_text("ax,ay\n1,2\n,\n3,4\n , \n")
    np.testing.assert_array_equal(read_input(tmp_path / "r.csv"), [[1.0, 3.0], [2.0, 4.0]])


@pytest.mark.parametrize("block_bytes", [1, 6 * 100 * 8 * 2, 1 << 20])
def test_windows_resampled_by_blocks_are_those_resampled_whole(block_bytes, monkeypatch):
    from primus_core.data.windows import resample

    monkeypatch.setattr(embed_module, "CHECK_BLOCK_BYTES", block_bytes)
    x = np.random.default_rng(5).normal(size=(5, 6, 100))
    got = prepare_windows(x, channels=6, window=250, rate_hz=50.0, input_rate_hz=20.0)
    whole = resample(x, 20.0, 50.0, axis=-1).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (5, 6, 250)
    np.testing.assert_array_equal(got, whole)
