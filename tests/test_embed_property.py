"""Property tests (issue 13): random malformed arrays - dtypes, shapes, extreme values, NaN/inf
placements - fed to `primus embed` and to the embedding API give either finite embeddings, or one
clear error (exit 1 and one ``error:`` line; a DataError from the API), never anything else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import primus_core
from primus_core.data.embed import embed_windows, prepare_windows
from primus_core.errors import PrimusError
from primus_core.zoo.modeldir import save_model_dir

SMALL = {"hidden_size": 16, "conv_channels": 8, "ssl_dim": 8, "mmcl_dim": 8}
F32_MAX = float(np.finfo(np.float32).max)
EXTREMES = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e30, -1e30, F32_MAX, -F32_MAX, 1e300, -1e300]
SPECIAL = [float("nan"), float("inf"), float("-inf")]

DTYPES = st.sampled_from(
    ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "complex64"]
)
SHAPES = st.one_of(
    st.sampled_from([(1, 6, 250), (2, 6, 250), (6, 250), (6, 400), (1, 6, 300)]),
    st.sampled_from([(1, 3, 250), (6, 100), (0, 6, 250), (250,), (), (1, 1, 6, 250)]),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7),
)


@st.composite
def arrays(draw):
    """An array of a random dtype and shape: mostly one fill value, with extreme, NaN and inf
    values dropped at random places."""
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind in "fc":
        fill = draw(st.sampled_from(EXTREMES + SPECIAL))
        elements = st.sampled_from(EXTREMES + SPECIAL) | st.floats(-10, 10)
    elif dtype.kind == "b":
        fill, elements = False, st.booleans()
    else:
        info = np.iinfo(dtype)
        fill = draw(st.sampled_from([0, int(info.min), int(info.max)]))
        elements = st.integers(int(info.min), int(info.max))
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.full(shape, fill).astype(dtype) if dtype.kind != "c" else np.full(shape, fill)
        array = array.astype(dtype)
        if array.size:
            for _ in range(draw(st.integers(0, 4))):
                index = tuple(draw(st.integers(0, side - 1)) for side in shape)
                array[index] = draw(elements)
    return array


RATES = st.sampled_from([None, None, 25.0, 100.0, 0.0, -5.0, float("nan"), float("inf")])
STRIDES = st.sampled_from([None, None, 1, 50, 250, 0, -1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    encoder = primus_core.create("encoder", "stacked-rnn", **SMALL).eval()
    path = tmp_path_factory.mktemp("m") / "model"
    save_model_dir(encoder, path, encoder_type="stacked-rnn", encoder_params=SMALL)
    return path, encoder


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=arrays(), rate=RATES, stride=STRIDES)
def test_embedding_api_gives_finite_vectors_or_a_data_error(model, array, rate, stride):
    _, encoder = model
    try:
        windows = prepare_windows(
            array, channels=6, window=250, rate_hz=50.0, input_rate_hz=rate, stride=stride
        )
        vectors = embed_windows(encoder, windows, head="mmcl", batch_size=4)
    except PrimusError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.shape[1] == 8
    assert np.isfinite(vectors).all()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(array=arrays(), rate=st.sampled_from([None, 100.0]))
def test_primus_embed_exits_0_with_finite_output_or_1_with_one_error_line(
    model, tmp_path_factory, capsys, array, rate
):
    from primus_core.cli.main import main

    path, _ = model
    folder = tmp_path_factory.mktemp("x")
    np.save(folder / "x.npy", array)
    args = ["embed", str(path), str(folder / "x.npy"), "--out", str(folder / "e.npy")]
    args += ["--rate", str(rate)] if rate else []
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    code = exit_info.value.code
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err
    if code == 0:
        vectors = np.load(folder / "e.npy")
        assert vectors.ndim == 2 and np.isfinite(vectors).all()
    else:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
        assert not (folder / "e.npy").exists()
