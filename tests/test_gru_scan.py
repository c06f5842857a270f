"""The CPU inference forward of nn.GRU (primus_core.data.gru_scan): its values against
torch.nn.GRU in each precision, and where the encoder and for_inference use it."""

import pytest
import torch

from primus_core.components import create
from primus_core.data.embed import for_inference
from primus_core.data.gru_scan import Int8GRU, gru_scan, scannable


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("all_steps_bytes", [None, 0])
def test_scan_gives_torch_grus_output_and_last_state(batch_first, all_steps_bytes, monkeypatch):
    """The input projection of all steps in one product (small inputs) or step by step
    (``ALL_STEPS_BYTES`` 0: what inputs over 32 MiB take), both torch.nn.GRU's values."""
    import primus_core.data.gru_scan as module

    if all_steps_bytes is not None:
        monkeypatch.setattr(module, "ALL_STEPS_BYTES", all_steps_bytes)
    torch.manual_seed(0)
    gru = torch.nn.GRU(7, 11, batch_first=batch_first)
    x = torch.randn(5, 9, 7)  # (batch, steps) or (steps, batch)
    with torch.no_grad():
        expected_out, expected_last = gru(x)
        out, last = gru_scan(gru, x)
    assert out.shape == expected_out.shape and last.shape == expected_last.shape
    assert torch.allclose(out, expected_out, atol=1e-6)
    assert torch.allclose(last, expected_last, atol=1e-6)
    assert torch.equal(out[:, -1] if batch_first else out[-1], last[0])


def test_scan_in_float64_matches_to_rounding():
    """The formula itself, without float32 rounding in the way: every gate and bias placed as
    torch.nn.GRU places it (a swapped gate or bias would show at 1e-3, not 1e-12)."""
    torch.manual_seed(1)
    gru = torch.nn.GRU(4, 6, batch_first=True).double()
    with torch.no_grad():
        for p in gru.parameters():
            p.uniform_(-1, 1)  # biases as large as weights
        x = torch.randn(3, 12, 4, dtype=torch.float64)
        expected = gru(x)[0]
        got = gru_scan(gru, x)[0]
    assert got.dtype == torch.float64 and torch.allclose(got, expected, atol=1e-12)


def test_bf16_weights_keep_the_state_in_float32():
    """With bfloat16 weights only the products are bfloat16: the result is nearer float32's than
    torch.nn.GRU run wholly in bfloat16, and comes back in bfloat16."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(32, 256, batch_first=True)
    x = torch.randn(16, 32, 32)
    half = torch.nn.GRU(32, 256, batch_first=True).bfloat16()
    half.load_state_dict(gru.state_dict())
    with torch.no_grad():
        reference = gru(x)[1].float()
        ours = gru_scan(half, x.bfloat16())[1]
        torchs = half(x.bfloat16())[1]
    assert ours.dtype == torch.bfloat16
    ours_error = (ours.float() - reference).abs().max()
    torch_error = (torchs.float() - reference).abs().max()
    assert ours_error < 0.02 and ours_error < torch_error


def test_int8_gru_is_close_to_float32_and_called_like_the_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(32, 128, batch_first=True)
    engine = torch.backends.quantized.engine
    quantised = Int8GRU(gru)
    if "onednn" in torch.backends.quantized.supported_engines:
        assert quantised.engine == "onednn"  # its AMX/VNNI kernels, not the default engine's
    assert torch.backends.quantized.engine == engine  # the global engine is put back
    x = torch.randn(8, 20, 32)
    with torch.no_grad():
        expected_out, expected_last = gru(x)
        out, last = quantised(x)
    assert out.shape == expected_out.shape and last.shape == expected_last.shape
    cosine = torch.nn.functional.cosine_similarity(last[0], expected_last[0])
    assert cosine.min() > 0.999 and not torch.equal(last, expected_last)
    with pytest.raises(ValueError, match="starts from zeros"):
        quantised(x, torch.zeros(1, 8, 128))


def test_only_one_layer_unidirectional_grus_with_biases_are_scanned():
    assert scannable(torch.nn.GRU(3, 4))
    for gru in (
        torch.nn.GRU(3, 4, num_layers=2),
        torch.nn.GRU(3, 4, bidirectional=True),
        torch.nn.GRU(3, 4, bias=False),
        torch.nn.LSTM(3, 4),
    ):
        assert not scannable(gru)
    with pytest.raises(ValueError, match="one-layer"):
        Int8GRU(torch.nn.GRU(3, 4, num_layers=2))


def test_the_encoder_scans_without_gradients_and_keeps_torch_gru_values(monkeypatch):
    """Inference on a CPU goes through gru_scan, with nn.GRU's values."""
    import primus_stackrnn.encoder as module

    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn", hidden_size=32, ssl_dim=8, mmcl_dim=8).eval()
    x = torch.randn(3, 6, 250)
    calls = []
    monkeypatch.setattr(module, "gru_scan", lambda g, f: calls.append(1) or gru_scan(g, f))
    with torch.no_grad():
        got = encoder(x)["emb"]
        expected = encoder.backbone[5](encoder.backbone[:5](x))[1][0]
    assert calls == [1] and torch.allclose(got, expected, atol=1e-6)


def test_int8_inference_replaces_the_gru_and_quantises_the_heads():
    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn", hidden_size=64, ssl_dim=32, mmcl_dim=32)
    quantised = for_inference(encoder, "int8", torch.device("cpu"))
    inner = quantised.encoder
    assert isinstance(inner.backbone[5], Int8GRU)
    assert isinstance(inner.mmcl_head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(encoder.backbone[5], torch.nn.GRU)  # the caller's copy keeps its GRU
    x = torch.randn(4, 6, 250)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(quantised(x)["emb"], encoder(x)["emb"])
    assert cosine.min() > 0.999


def test_the_packed_product_is_the_plain_product():
    """The fp32 scan's product with W_hh packed once (MKL) gives h @ W_hh.T."""
    from primus_core.data.gru_scan import packed_product

    torch.manual_seed(0)
    w, h = torch.randn(48, 16), torch.randn(5, 16)
    product = packed_product(w, 5)
    if not torch.backends.mkl.is_available():
        pytest.skip("this torch has no MKL")
    assert product is not None  # MKL is there: the packed path is taken
    assert torch.allclose(product(h), h @ w.t(), atol=1e-5)
    assert packed_product(w.double(), 5) is None  # float64: the plain product
    assert packed_product(w.to("meta"), 5) is None


def test_a_copy_of_an_int8_gru_packs_its_own_weights():
    """Packed int8 weights restored by torch take the default engine's kernels (about 1.5x
    slower here), so a deep copy or a pickle leaves them behind and packs on first use."""
    import copy
    import pickle

    torch.manual_seed(0)
    quantised = Int8GRU(torch.nn.GRU(8, 16, batch_first=True))
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        expected = quantised(x)[1]
        assert quantised._packed is not None
        for other in (copy.deepcopy(quantised), pickle.loads(pickle.dumps(quantised))):
            assert other._packed is None and other.engine == quantised.engine
            assert torch.equal(other(x)[1], expected) and other._packed is not None
    assert quantised._packed is not None  # the original keeps its packed weights


def test_the_bf16_packed_product_is_the_bf16_product():
    """oneDNN's product with W_hh packed once: bfloat16 in, bfloat16 out, as addmm."""
    from primus_core.data.gru_scan import packed_product

    torch.manual_seed(0)
    w, h, bias = torch.randn(48, 16).bfloat16(), torch.randn(5, 16), torch.randn(48).bfloat16()
    product = packed_product(w, 5, bias)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    assert product is not None
    expected = torch.addmm(bias, h.bfloat16(), w.t()).float()
    got = product(h.bfloat16())
    assert got.dtype == torch.bfloat16 and torch.allclose(got.float(), expected, atol=1e-2)


@pytest.mark.parametrize(
    "engine",
    [e for e in ("qnnpack", "x86", "fbgemm") if e in torch.backends.quantized.supported_engines],
)
def test_int8_gru_on_the_other_quantised_engines(engine, monkeypatch):
    """Where torch has no oneDNN (e.g. ARM's qnnpack, one scale per matrix), the default
    engine's int8 product stays close to float32."""
    import primus_core.data.gru_scan as module

    monkeypatch.setattr(module, "_quantised_engine", lambda: engine)
    torch.manual_seed(0)
    gru = torch.nn.GRU(16, 64, batch_first=True)
    quantised = Int8GRU(gru)
    x = torch.randn(4, 10, 16)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(quantised(x)[1][0], gru(x)[1][0])
    assert quantised.engine == engine and cosine.min() > 0.99


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_the_scan_records_no_graph_even_with_gradients_on(kernels, monkeypatch):
    """Inference only: called with gradients enabled, nothing is recorded for backward, with
    the compiled kernels (whose writes autograd never sees) or torch's operators."""
    monkeypatch.setenv("PRIMUS_NATIVE_KERNELS", kernels)
    gru = torch.nn.GRU(3, 4, batch_first=True)
    out, last = gru_scan(gru, torch.randn(2, 5, 3, requires_grad=True))
    assert not out.requires_grad and not last.requires_grad


def test_int8_weights_have_a_scale_per_row_where_the_engine_allows():
    """Rows 100x smaller than the others keep their precision (one scale per output row): with a
    single scale for the matrix they would round to a few levels, or to zero."""
    from primus_core.data.gru_scan import recurrent_bias

    torch.manual_seed(0)
    gru = torch.nn.GRU(4, 32, batch_first=True)
    with torch.no_grad():
        gru.weight_hh_l0[::2] *= 0.01  # every other row of W_hh 100x smaller
    quantised = Int8GRU(gru)
    if quantised.engine == "qnnpack":
        pytest.skip("qnnpack: one scale per matrix")
    h = torch.rand(64, 32) * 2 - 1
    expected = h @ gru.weight_hh_l0.detach().t()
    product = torch.ops.quantized.linear_dynamic(h, quantised._pack(), False)
    product = product - recurrent_bias(gru.bias_hh_l0.detach())
    small = slice(0, 96, 2)
    error = (product[:, small] - expected[:, small]).abs().max()
    assert error < 0.02 * expected[:, small].abs().max(), error


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_input_projection_is_one_product_up_to_32_mib(dtype, monkeypatch):
    """All steps' projection in one product where it takes at most ALL_STEPS_BYTES (and always
    in bfloat16), else one product per step when the step is asked for; the same values."""
    import primus_core.data.gru_scan as module

    calls = []
    original = torch.mm
    monkeypatch.setattr(module.torch, "mm", lambda *a, **k: calls.append(1) or original(*a, **k))
    steps, batch, hidden = 4, 5, 6  # the projection: 4 x 5 x 18 values
    x1 = torch.randn(steps, batch, 8).to(dtype)
    w = torch.randn(8, 3 * hidden)
    expected = (x1.float() @ w.to(dtype).float()).to(dtype)
    at_most = steps * batch * 3 * hidden * x1.element_size()
    for limit, products in ((at_most, 1), (at_most - 1, 0 if dtype == torch.float32 else 1)):
        monkeypatch.setattr(module, "ALL_STEPS_BYTES", limit)
        calls.clear()
        project = module.input_projections(x1, w, dtype)
        assert len(calls) == products  # computed up front: one product for every step
        got = torch.stack([project(t) for t in range(steps)])
        assert len(calls) == (1 if products else steps)
        assert got.dtype == dtype
        assert torch.allclose(got.float(), expected.float(), rtol=2e-2, atol=1e-2)
