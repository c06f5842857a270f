"""The compiled CPU kernels (primus_core/native.py, native_kernels.c): built with the
machine's C compiler, the same values as torch.nn.GRU and as the torch-operator path they
replace, bfloat16 stores rounded as torch rounds, and a clean fallback where they can't be built."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primus_core import native
from primus_core.data.gru_scan import Bf16GRU, gru_scan

needs_compiler = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler on this machine"
)


@pytest.fixture
def kernels_on(monkeypatch):
    monkeypatch.setenv(native.SWITCH, "1")
    library = native.kernels()
    assert library is not None, "a C compiler is here, yet the kernels did not build"
    return library


@needs_compiler
def test_the_kernels_build_once_per_source_and_machine(tmp_path):
    first = native.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no build folder left behind


@needs_compiler
def test_loading_them_keeps_denormals(kernels_on):
    """-ffast-math at link time would set flush-to-zero for the process (crtfastmath)."""
    tiny = np.float32(1e-39)  # a float32 denormal
    assert tiny * np.float32(1.0) != 0
    assert torch.tensor(1e-39, dtype=torch.float32).item() != 0


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails, silently
    with pytest.raises(RuntimeError) as failure:
        native.build(tmp_path / "kernels")
    assert str(failure.value).endswith("... failed: (no output)")
    assert list((tmp_path / "kernels").iterdir()) == []


def test_the_switch_turns_them_off(monkeypatch):
    for value in ("0", "false", "no", "off", " Off "):
        monkeypatch.setenv("PRIMUS_NATIVE_KERNELS", value)  # the documented name
        assert native.kernels() is None


def fake_compiler(folder, version: str = "fakecc 1.0"):
    """A "compiler" that states its version and fails every build with two lines on stderr."""
    script = folder / "fakecc"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\n'
        'echo "first line" >&2; echo "fakecc: error: no such thing" >&2; exit 1\n'
    )
    script.chmod(0o755)
    return str(script)


def test_a_failed_build_names_the_compilers_last_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", fake_compiler(tmp_path))
    with pytest.raises(RuntimeError) as failure:
        native.build(tmp_path / "kernels")
    assert str(failure.value).endswith("failed: fakecc: error: no such thing")
    assert str(failure.value).startswith(f"{tmp_path / 'fakecc'} -O3 ... failed")
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with pytest.raises(RuntimeError) as failure:
        native.build(tmp_path / "kernels")
    assert str(failure.value) == "no C compiler found (cc, gcc or $CC)"


def test_the_library_is_named_by_source_flags_compiler_and_cpu(tmp_path, monkeypatch):
    """Another source, other flags, another compiler version or another CPU: another file."""
    first = fake_compiler(tmp_path)
    key = native._build_key(first)
    assert len(key) == 16 and native._build_key(first) == key
    (tmp_path / "v2").mkdir()
    assert native._build_key(fake_compiler(tmp_path / "v2", "fakecc 2.0")) != key
    source = tmp_path / "kernels.c"
    source.write_bytes(native.SOURCE.read_bytes() + b"\n")
    with monkeypatch.context() as patch:
        patch.setattr(native, "SOURCE", source)
        assert native._build_key(first) != key
    with monkeypatch.context() as patch:
        patch.setattr(native, "COMPILE_FLAGS", [*native.COMPILE_FLAGS, "-g"])
        assert native._build_key(first) != key
    read_text = native.Path.read_text

    def other_cpu(path, *args, **kwargs):
        text = read_text(path, *args, **kwargs)
        return text.replace("flags", "flags\t: other", 1) if str(path) == "/proc/cpuinfo" else text

    with monkeypatch.context() as patch:
        patch.setattr(native.Path, "read_text", other_cpu)
        if native.Path("/proc/cpuinfo").exists():
            assert native._build_key(first) != key


@needs_compiler
def test_the_library_is_built_under_primus_home(tmp_path, monkeypatch):
    home = tmp_path / "not" / "yet"  # made on the way
    monkeypatch.setenv("PRIMUS_HOME", str(home))
    path = native.build()
    assert path.parent == home / "kernels" and path.name.startswith("gru-")
    assert path.suffix == ".so"


@needs_compiler
@pytest.mark.parametrize("switch", ["1", "0"])
def test_inference_scan_gives_torch_grus_values_either_way(switch, monkeypatch):
    """The scan runs each step's gates in the kernel where they are on, and gives torch's
    values either way."""
    monkeypatch.setenv(native.SWITCH, switch)
    steps = []
    original = native.forward_step
    monkeypatch.setattr(native, "forward_step", lambda *a: steps.append(1) or original(*a))
    torch.manual_seed(0)
    gru = torch.nn.GRU(33, 64, batch_first=True)
    x = torch.randn(9, 12, 33)
    with torch.no_grad():
        expected, expected_last = gru(x)
        out, last = gru_scan(gru, x)
    assert len(steps) == (12 if switch == "1" else 0)
    assert torch.allclose(out, expected, atol=2e-6) and torch.allclose(
        last, expected_last, atol=2e-6
    )


def gates(gi, gh, h, b_hn):
    """The step as torch operators, in float32 (the reference the kernel is held to)."""
    hidden = h.shape[1]
    gi, gh = gi.float(), gh.float()
    r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
    hn = gh[:, 2 * hidden :] + (0 if b_hn is None else b_hn)
    n = torch.tanh(gi[:, 2 * hidden :] + r * hn)
    return n + z * (h - n), r, z, n, hn


@needs_compiler
@pytest.mark.parametrize("half", [False, True])
def test_one_forward_step_matches_torch_operators(half, kernels_on):
    """Each of gi and gh may be bfloat16 (widened on load); the new state also comes back in
    bfloat16, rounded to nearest even exactly as torch rounds it; r, z, n and gh_n + b_hn kept."""
    torch.manual_seed(0)
    rows, hidden = 13, 40
    low = torch.bfloat16 if half else torch.float32
    gi, gh = (torch.randn(rows, 3 * hidden).to(low) for _ in range(2))
    h, b_hn = torch.randn(rows, hidden), torch.randn(hidden)
    h_next, h16 = torch.empty(rows, hidden), torch.empty(rows, hidden, dtype=torch.bfloat16)
    rz, n, hn = torch.empty(rows, 2 * hidden), torch.empty(rows, hidden), torch.empty(rows, hidden)
    native.forward_step(kernels_on, gi, gh, b_hn, h, h_next, h16, (rz, n, hn))
    expected, r, z, n_ref, hn_ref = gates(gi, gh, h, b_hn)
    assert torch.allclose(h_next, expected, atol=2e-6)
    assert torch.equal(h16, h_next.bfloat16())
    assert torch.allclose(rz, torch.cat([r, z], dim=1), atol=2e-6)
    assert torch.allclose(n, n_ref, atol=2e-6) and torch.equal(hn, hn_ref)


@needs_compiler
@pytest.mark.parametrize("products", ["float32", "bfloat16", "mixed"])
@pytest.mark.parametrize("kept", ["r z hn", "none", "r z"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_every_way_through_the_forward_step_gives_the_same_values(
    products, kept, with_bias, kernels_on
):
    """The step's rows take one of three ways: float32 products read in place (inference, and
    training keeping r, z and hn), bfloat16 products widened as they are read (inference), any
    other mix copied into float32 first. Each gives torch's values, with b_hn or without it
    (the product added it), with the state in bfloat16 too or not."""
    torch.manual_seed(1)
    rows, hidden = 11, 24
    dtype_i, dtype_h = {
        "float32": (torch.float32, torch.float32),
        "bfloat16": (torch.bfloat16, torch.bfloat16),
        "mixed": (torch.float32, torch.bfloat16),
    }[products]
    gi, gh = torch.randn(rows, 3 * hidden).to(dtype_i), torch.randn(rows, 3 * hidden).to(dtype_h)
    h = torch.randn(rows, hidden)
    b_hn = torch.randn(hidden) if with_bias else None
    h_next = torch.full((rows, hidden), float("nan"))
    h16 = None if products == "float32" else torch.empty(rows, hidden, dtype=torch.bfloat16)
    rz = None if kept == "none" else torch.full((rows, 2 * hidden), float("nan"))
    hn = torch.full((rows, hidden), float("nan")) if kept == "r z hn" else None
    native.forward_step(kernels_on, gi, gh, b_hn, h, h_next, h16, (rz, None, hn))
    expected, r, z, _, hn_ref = gates(gi, gh, h, b_hn)
    assert torch.allclose(h_next, expected, atol=2e-6)
    if h16 is not None:
        assert torch.equal(h16, h_next.bfloat16())
    if rz is not None:
        assert torch.allclose(rz, torch.cat([r, z], dim=1), atol=2e-6)
    if hn is not None:
        assert torch.equal(hn, hn_ref)


@needs_compiler
def test_a_sequences_bound_steps_are_the_step_kernels_on_its_views(kernels_on):
    """forward_steps / backward_steps work out the buffers' addresses once; step t (and its
    place i in a chunk) reaches exactly the rows that forward_step / backward_step on the
    views hs[t], hs[t + 1], rz[t], ... reach. Buffers that are not contiguous float32 are
    refused when bound."""
    torch.manual_seed(3)
    steps, rows, hidden, chunk = 5, 3, 8, 2
    b_hn = torch.randn(hidden)
    gis, ghs = torch.randn(steps, rows, 3 * hidden), torch.randn(steps, rows, 3 * hidden)
    bound, views = [torch.zeros(steps + 1, rows, hidden)], [torch.zeros(steps + 1, rows, hidden)]
    for buffers in (bound, views):
        buffers[0][0] = torch.randn(rows, hidden, generator=torch.Generator().manual_seed(4))
        buffers += [torch.zeros(steps, rows, 2 * hidden), torch.zeros(steps, rows, hidden)]
    step = native.forward_steps(kernels_on, bound[0], b_hn, bound[1], bound[2])
    for t in range(steps):
        step(t, gis[t], ghs[t])
        hs, rz, hn = views
        native.forward_step(
            kernels_on, gis[t], ghs[t], b_hn, hs[t], hs[t + 1], None, (rz[t], None, hn[t])
        )
    for a, b in zip(bound, views, strict=True):
        assert torch.equal(a, b)
    hs, rz, hn = views
    results = []
    for use_bound in (True, False):
        dh = torch.randn(rows, hidden, generator=torch.Generator().manual_seed(5))
        gi_n = torch.randn(chunk, rows, hidden, generator=torch.Generator().manual_seed(6))
        g = torch.zeros(chunk, rows, 3 * hidden)
        seeded = torch.Generator().manual_seed(7)
        through, grad_out = (torch.randn(rows, hidden, generator=seeded) for _ in range(2))
        step = native.backward_steps(kernels_on, dh, rz, hn, hs, gi_n, g) if use_bound else None
        for t, i in ((4, 1), (3, 0)):  # the last chunk of two steps, last step first
            if step is not None:
                step(t, i, through, grad_out if t == 4 else None)
            else:
                out = grad_out if t == 4 else None
                native.backward_step(
                    kernels_on, dh, through, out, rz[t], gi_n[i], hn[t], hs[t], g[i]
                )
        results.append((dh, gi_n, g))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.forward_steps(kernels_on, hs.transpose(1, 2), b_hn, rz, hn)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.backward_steps(kernels_on, dh.double(), rz, hn, hs, gi_n, g)


@needs_compiler
@pytest.mark.parametrize("with_output_grad", [False, True])
@pytest.mark.parametrize("with_through", [False, True])
def test_one_backward_step_matches_autograd(with_output_grad, with_through, kernels_on):
    """The state's gradient arrives in up to three parts (the bypass dh, the product's part
    ``through``, the output's); the kernel sums them and returns the gates' gradients."""
    torch.manual_seed(1)
    rows, hidden = 11, 24
    gi, gh = torch.randn(rows, 3 * hidden), torch.randn(rows, 3 * hidden, requires_grad=True)
    h = torch.randn(rows, hidden, requires_grad=True)
    gi_n = gi[:, 2 * hidden :].clone().requires_grad_()
    gi_rz = gi[:, : 2 * hidden]
    # autograd through the step, gi's n part and gh as leaves, b_hn in gh
    r = torch.sigmoid(gi_rz[:, :hidden] + gh[:, :hidden])
    z = torch.sigmoid(gi_rz[:, hidden:] + gh[:, hidden : 2 * hidden])
    n = torch.tanh(gi_n + r * gh[:, 2 * hidden :])
    h_next = n + z * (h - n)
    dh, through, grad_out = (torch.randn(rows, hidden) for _ in range(3))
    total = dh + (through if with_through else 0) + (grad_out if with_output_grad else 0)
    h_next.backward(total)
    g, gi_n_dn = torch.empty(rows, 3 * hidden), gi_n.detach().clone()
    kernel_dh = dh.clone()
    # what the training GRU keeps (r, z and hn) and n's input projection, from which n again
    saved = (torch.cat([r, z], dim=1).detach(), gi_n_dn, gh[:, 2 * hidden :].detach().clone())
    native.backward_step(
        kernels_on,
        kernel_dh,
        through if with_through else None,
        grad_out if with_output_grad else None,
        *saved,
        h.detach(),
        g,
    )
    assert torch.allclose(g, gh.grad, atol=1e-5)  # d(gh_r), d(gh_z), d(gh_n + b_hn)
    assert torch.allclose(gi_n_dn, gi_n.grad, atol=1e-5)  # dn, in gi_n's place
    assert torch.allclose(kernel_dh, h.grad, atol=1e-5)  # the part through z alone
    assert torch.allclose(kernel_dh, total * z.detach(), atol=1e-6)


def test_the_tiled_transpose_takes_contiguous_float32_cpu_tensors_only():
    """Which tensors go to the kernel (the rest to torch's copy), with a stand-in library that
    records its calls."""

    class Library:
        calls = []

        def primus_transpose(self, rows, cols, src, dst, threads):
            self.calls.append((rows, cols))

    library = Library()
    native.transposed(library, torch.zeros(3, 4))
    assert library.calls == [(3, 4)]
    for other in (torch.zeros(3, 4, dtype=torch.float64), torch.zeros(4, 3).t()):
        assert torch.equal(native.transposed(library, other), other.t())
    assert library.calls == [(3, 4)]


@needs_compiler
@pytest.mark.parametrize("shape", [(1536, 512), (33, 70), (1, 5), (64, 1)])
def test_tiled_transpose_is_torchs(shape, kernels_on):
    x = torch.randn(*shape)
    ours = native.transposed(kernels_on, x)
    assert ours.is_contiguous() and torch.equal(ours, x.t())
    assert torch.equal(native.transposed(None, x), x.t())  # without the kernels: torch's
    column = torch.randn(5, 8)[:, 2:5]  # not contiguous: torch's copy
    assert torch.equal(native.transposed(kernels_on, column), column.t())


@needs_compiler
def test_bf16_gru_runs_its_products_in_bfloat16_near_float32(kernels_on, monkeypatch):
    """Bf16GRU (CPU bf16 inference): float32 in and out, near the float32 GRU, the same with
    the kernels as with torch's operators, and differing from float32 (the products are
    bfloat16)."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(33, 128, batch_first=True)
    x = torch.randn(16, 32, 33)
    half = Bf16GRU(gru)
    with torch.no_grad():
        reference = gru(x)[1]
        ours = half(x)[1]
        monkeypatch.setenv(native.SWITCH, "0")
        operators = half(x)[1]
    assert ours.dtype == torch.float32
    error = (ours - reference).abs().max()
    assert 0 < error < 0.02
    assert torch.allclose(ours, operators, atol=2e-3)


@needs_compiler
@pytest.mark.parametrize("k", [3, 4])  # 3: the encoder's (a vectorised loop), 4: any other
def test_max_pool_gives_torchs_values_and_gradients_keeping_one_byte(k, kernels_on):
    """Ties (the first maximum takes the gradient, as in torch), a NaN (it is the maximum) and
    two in a window (the last takes the gradient, as in torch), a tail no window covers (23 = 7 windows of 3 + 2, or 5 of 4 + 3): the same
    values and gradients as torch's max-pool; what it keeps for backward is one uint8 per
    output."""
    from primus_stackrnn.pool import max_pool

    torch.manual_seed(0)
    x = torch.randn(4, 5, 23).round(decimals=1)  # rounding makes ties
    x[0, 0, :k] = 0.5  # a window of equal values
    x[1, 2, 1] = float("nan")  # a NaN in the middle of the first window
    x[2, 3, k : k + 2] = float("nan")  # two NaNs in one window
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        ours = max_pool(x.requires_grad_(), k)
    expected = torch.nn.functional.max_pool1d(x, k)
    assert torch.equal(ours.isnan(), expected.isnan())
    assert torch.equal(ours.nan_to_num(), expected.nan_to_num())
    assert [(t.dtype, tuple(t.shape)) for t in kept] == [(torch.uint8, (4, 5, 23 // k))]
    grad = torch.randn(4, 5, 23 // k)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    assert torch.equal(ours_grad, expected_grad)


def test_max_pool_applies_to_plain_float32_cpu_pools_only(monkeypatch):
    from torch import nn

    from primus_stackrnn.pool import pools_natively

    monkeypatch.setenv(native.SWITCH, "1")
    x = torch.randn(2, 3, 12)
    if native.kernels() is not None:
        assert pools_natively(nn.MaxPool1d(3), x)
    for pool in (
        nn.MaxPool1d(3, stride=2),
        nn.MaxPool1d(3, padding=1),
        nn.MaxPool1d(3, dilation=2),
        nn.MaxPool1d(3, ceil_mode=True),
        nn.AdaptiveAvgPool1d(4),
    ):
        assert not pools_natively(pool, x)
    assert not pools_natively(nn.MaxPool1d(3), x.double())
    monkeypatch.setenv(native.SWITCH, "0")
    assert not pools_natively(nn.MaxPool1d(3), x)


@needs_compiler
def test_a_training_pass_pools_natively_and_matches_torchs_pools(monkeypatch):
    """The encoder's training pass with the kernels (GRU and pools) against the same encoder
    with torch's operators: outputs and parameter gradients to float32 rounding."""
    from primus_core.components import create

    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn", hidden_size=32, ssl_dim=8, mmcl_dim=8)
    x = torch.randn(3, 6, 250)
    grads = []
    for switch in ("1", "0"):
        monkeypatch.setenv(native.SWITCH, switch)
        encoder.zero_grad()
        out = encoder(x)["mmcl"]
        out.square().sum().backward()
        used = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
        grads.append([out.detach(), *used])
    assert len(grads[0]) == len(grads[1]) > 10  # the backbone's and the mmcl head's
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("length", "bins"), [(15, 32), (23, 32), (77, 5), (32, 32), (5, 7)])
def test_adaptive_average_pool_as_a_product_is_torchs(length, bins):
    """The encoder's adaptive pooling as one product with an averaging matrix: torch's values
    and gradients, shrinking (77 -> 5), growing (15 -> 32, PRIMUS's last pool) or neither."""
    from primus_stackrnn.pool import adaptive_avg_pool

    torch.manual_seed(0)
    x = torch.randn(3, 4, length, dtype=torch.float64, requires_grad=True)
    ours = adaptive_avg_pool(x, bins)
    expected = torch.nn.functional.adaptive_avg_pool1d(x, bins)
    assert ours.shape == expected.shape and torch.allclose(ours, expected, atol=1e-12)
    grad = torch.randn_like(expected)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    assert torch.allclose(ours_grad, expected_grad, atol=1e-12)


def test_without_a_working_compiler_the_gru_runs_on_torch_operators(tmp_path, monkeypatch):
    """The first use finds no working compiler (CC fails): no kernels, the reason logged, and
    the GRU still gives torch.nn.GRU's values."""
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("PRIMUS_HOME", str(tmp_path))
    monkeypatch.setenv(native.SWITCH, "1")
    native._load.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            records = []
            patch.setattr(native.log, "info", lambda *args: records.append(args[0] % args[1:]))
            assert native.kernels() is None
        assert records and "failed" in records[0]
        torch.manual_seed(0)
        gru = torch.nn.GRU(5, 8, batch_first=True)
        x = torch.randn(3, 4, 5)
        with torch.no_grad():
            assert torch.allclose(gru_scan(gru, x)[1], gru(x)[1], atol=1e-6)
    finally:
        native._load.cache_clear()  # the next use builds (or finds) the real kernels again
