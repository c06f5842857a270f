"""Values, not shapes: recordings through the contract (50 Hz and the 200 Hz imu2clip variant)
and a CSV recording through `primus embed`'s Python path, each against an independent pipeline
written here (scipy's resample_poly called directly, windows cut by slicing, units by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from primus_core import create
from primus_core.config import IMUContract
from primus_core.data.embed import embed_windows, prepare_windows, read_input
from primus_core.data.windows import Recording, recording_windows

G = 9.80665


def recording(rate_hz: float, seconds: float, seed: int = 0, labels=None) -> Recording:
    rng = np.random.default_rng(seed)
    n = int(rate_hz * seconds)
    t = np.arange(n) / rate_hz
    acc = np.stack([np.sin(2 * np.pi * f * t) + 1.0 for f in (0.5, 1.0, 1.5)], axis=1)  # g
    gyro = rng.normal(size=(n, 3)) * 10  # deg/s
    data = np.concatenate([acc, gyro], axis=1)
    channels = ["gyro_x", "gyro_y", "gyro_z", "acc_x", "acc_y", "acc_z"]  # shuffled order
    return Recording(
        data=np.concatenate([gyro, acc], axis=1),
        rate_hz=rate_hz,
        channels=channels,
        units=["deg/s"] * 3 + ["g"] * 3,
        subject=1,
        source="synthetic",
        labels=labels,
    ), data


def by_hand(data: np.ndarray, up: int, down: int, window: int, stride: int) -> np.ndarray:
    x = data * np.array([G] * 3 + [np.pi / 180] * 3)
    y = resample_poly(x, up, down, axis=0, padtype="line")
    starts = range(0, len(y) - window + 1, stride)
    return np.stack([y[s : s + window].T for s in starts]).astype(np.float32)


@pytest.mark.parametrize(
    "rate_hz,contract,up,down",
    [
        (100.0, IMUContract(), 1, 2),
        (10.0, IMUContract(rate_hz=200.0, window_samples=1000), 20, 1),  # imu2clip, 200 Hz
        (50.0, IMUContract(rate_hz=200.0, window_samples=1000), 4, 1),
        (200.0, IMUContract(rate_hz=200.0, window_samples=1000), 1, 1),
    ],
)
def test_recording_windows_hold_the_resampled_converted_values(rate_hz, contract, up, down):
    rec, data = recording(rate_hz, 21.0)
    imu, labels = recording_windows(rec, contract, stride_s=2.5)
    stride = round(2.5 * contract.rate_hz)
    if up == down:
        x = data * np.array([G] * 3 + [np.pi / 180] * 3)
        starts = range(0, len(x) - contract.window_samples + 1, stride)
        want = np.stack([x[s : s + contract.window_samples].T for s in starts]).astype(np.float32)
    else:
        want = by_hand(data, up, down, contract.window_samples, stride)
    assert imu.shape[1:] == (6, contract.window_samples)
    np.testing.assert_allclose(imu[: len(want)], want, rtol=1e-5, atol=1e-5)
    assert (labels == -1).all()


def test_labelled_runs_are_resampled_separately():
    labels = np.repeat([0, 1], 500)  # 10 s of each label at 50 Hz
    rec, data = recording(50.0, 20.0, labels=labels)
    imu, got = recording_windows(rec, IMUContract(rate_hz=25.0, window_samples=125))
    first = by_hand(data[:500], 1, 2, 125, 125)
    second = by_hand(data[500:], 1, 2, 125, 125)
    np.testing.assert_allclose(imu, np.concatenate([first, second]), rtol=1e-5, atol=1e-5)
    assert got.tolist() == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create("encoder", "stacked-rnn", hidden_size=16).eval()


def test_csv_recording_embeds_as_its_resampled_windows(encoder, tmp_path):
    rng = np.random.default_rng(3)
    native = rng.normal(size=(1300, 6)).astype(np.float32)  # 13 s at 100 Hz
    path = tmp_path / "rec.csv"
    lines = ["ax,ay,az,gx,gy,gz"] + [",".join(f"{v:.6f}" for v in row) for row in native]
    path.write_text("\n".join(lines) + "\n")
    parsed = read_input(path)
    assert parsed.shape == (6, 1300)
    np.testing.assert_allclose(parsed.T, native, atol=1e-6)
    windows = prepare_windows(parsed, channels=6, window=250, rate_hz=50.0, input_rate_hz=100.0)
    got = embed_windows(encoder, windows, head="emb")
    # independent path: 100 -> 50 Hz by scipy, two non-overlapping 5 s windows, one forward pass
    resampled = resample_poly(native.astype(np.float64), 1, 2, axis=0, padtype="line")
    assert len(resampled) == 650
    want_windows = np.stack([resampled[0:250].T, resampled[250:500].T]).astype(np.float32)
    np.testing.assert_allclose(windows, want_windows, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        want = encoder(torch.from_numpy(want_windows))["emb"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_windows_input_is_cut_to_the_window_and_embedded_in_batches(encoder):
    x = np.random.default_rng(4).normal(size=(5, 6, 300)).astype(np.float32)
    windows = prepare_windows(x, channels=6, window=250, rate_hz=50.0)
    np.testing.assert_array_equal(windows, x[..., :250])
    got = embed_windows(encoder, windows, head="emb", batch_size=2)
    with torch.no_grad():
        want = encoder(torch.from_numpy(x[..., :250].copy()))["emb"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_check_finite_names_the_first_bad_run_of_rows():
    from primus_core.data.windows import check_finite
    from primus_core.errors import DataError

    x = np.zeros((10, 3, 2))
    x[4, 2, 1] = np.nan
    x[5, 0, 0] = np.inf
    with pytest.raises(
        DataError, match=r"^rec: non-finite values \(NaN/inf\) in 2 row\(s\) starting at sample 4$"
    ):
        check_finite(x, "rec")
    rows = np.zeros((6, 2))
    rows[3, 1] = np.inf
    with pytest.raises(DataError, match="in 1 row.s. starting at sample 3$"):
        check_finite(rows, "rec")
    t = np.array([0.0, 1.0, np.nan, 3.0])
    with pytest.raises(DataError, match="in 1 row.s. starting at line 7$"):
        check_finite(t, "file.csv", first_line=5)


def test_check_columns_refuses_other_shapes():
    from primus_core.data.windows import check_columns
    from primus_core.errors import DataError

    check_columns(np.zeros((4, 6)), 6, "ok")
    with pytest.raises(DataError, match="expected 6 columns, got 1$"):
        check_columns(np.zeros(6), 6, "flat")
    with pytest.raises(DataError, match="expected 6 columns, got 5$"):
        check_columns(np.zeros((4, 5)), 6, "narrow")


def test_unit_factors_both_ways():
    from primus_core.data.windows import unit_factor

    assert unit_factor("m/s^2", "g") == pytest.approx(1 / G)
    assert unit_factor("g", "mg") == pytest.approx(1000.0)
    assert unit_factor("rad/s", "deg/s") == pytest.approx(180 / np.pi)


def test_missing_channels_are_an_error_unless_filled():
    from primus_core.data.windows import to_contract_channels
    from primus_core.errors import DataError

    data = np.ones((5, 3))
    acc = ["acc_x", "acc_y", "acc_z"]
    with pytest.raises(DataError, match="has no channel 'gyro_x'"):
        to_contract_channels(data, acc, ["g"] * 3, IMUContract())
    filled = to_contract_channels(data, acc, ["g"] * 3, IMUContract(), fill_missing=True)
    np.testing.assert_allclose(filled, np.concatenate([np.full((5, 3), G), np.zeros((5, 3))], 1))


def test_sliding_windows_default_min_fill_is_half_a_window():
    from primus_core.data.windows import sliding_windows

    x = np.ones((15, 1))
    assert len(sliding_windows(x, 10, 10)[1]) == 2  # a 5-sample tail is half a window: padded
    assert len(sliding_windows(np.ones((14, 1)), 10, 10)[1]) == 1


def test_a_missing_channel_in_the_middle_is_filled_and_the_rest_still_converted():
    from primus_core.data.windows import to_contract_channels
    from primus_core.errors import DataError

    channels = ["acc_x", "acc_y", "acc_z", "gyro_y", "gyro_z"]  # no gyro_x
    data = np.arange(10.0).reshape(2, 5)
    out = to_contract_channels(
        data, channels, ["g"] * 3 + ["rad/s"] * 2, IMUContract(), fill_missing=True
    )
    np.testing.assert_allclose(out[:, :3], data[:, :3] * G)
    np.testing.assert_allclose(out[:, 3], 0.0)
    np.testing.assert_allclose(out[:, 4:], data[:, 3:])
    with pytest.raises(DataError) as caught:
        to_contract_channels(
            data, channels, ["g"] * 3 + ["rad/s"] * 2, IMUContract(), source="r.csv"
        )
    assert str(caught.value) == (
        "r.csv: has no channel 'gyro_x' (has: acc_x, acc_y, acc_z, gyro_y, gyro_z)"
    )


def test_short_signals_and_tiny_tails_by_hand():
    from primus_core.data.windows import label_runs, sliding_windows

    def starts(n, window, stride, min_fill=0.5):
        return sliding_windows(np.ones((n, 1)), window, stride, min_fill)[1].tolist()

    assert starts(49, 100, 50) == []  # under half a window: nothing
    assert starts(50, 100, 50) == [0]  # exactly half: one padded window, at 0
    assert starts(10, 100, 50, min_fill=0.1) == [0]
    assert starts(101, 100, 100, min_fill=0.01) == [0, 100]  # a 1-sample tail is enough here
    assert starts(102, 100, 1) == [0, 1, 2]
    assert label_runs(np.array([3])) == [(0, 1, 3)]
    assert label_runs(np.array([-1])) == []
    assert label_runs(np.array([], np.int64)) == []


def test_recording_length_rules_at_the_native_rate():
    from primus_core.errors import DataError

    contract = IMUContract()  # 250 samples at 50 Hz: half a window is 250 samples at 100 Hz

    def rec(n, rate=100.0):
        return Recording(
            np.ones((n, 6)), rate, list(contract.channels), list(contract.units), 1, "r"
        )

    with pytest.raises(DataError) as caught:
        recording_windows(rec(249), contract)
    assert str(caught.value) == (
        "r: recording has 249 samples (2.49 s at 100 Hz), shorter than the 0.5 of a 5 s window "
        "needed"
    )
    imu, _ = recording_windows(rec(250), contract)  # exactly half a window: one padded window
    assert imu.shape == (1, 6, 250)
    one = recording_windows(rec(1, 50.0), IMUContract(window_samples=50), min_fill=0.01)[0]
    assert one.shape == (1, 6, 50)
    # stride_s of one sample: a window at every sample
    imu, _ = recording_windows(rec(252, 50.0), contract, stride_s=0.02, min_fill=1.0)
    assert imu.shape[0] == 3
