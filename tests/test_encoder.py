import pytest
import torch

import primus_core
from primus_core.errors import ComponentError

REFERENCE_KEYS = {
    "backbone.0.weight": (6,),
    "backbone.0.bias": (6,),
    "backbone.1.net.0.weight": (32, 6, 10),
    "backbone.2.net.0.weight": (32, 32, 5),
    "backbone.3.net.0.weight": (32, 32, 5),
    "backbone.4.weight": (32,),
    "backbone.4.bias": (32,),
    "backbone.5.weight_ih_l0": (1536, 32),
    "backbone.5.weight_hh_l0": (1536, 512),
    "backbone.5.bias_ih_l0": (1536,),
    "backbone.5.bias_hh_l0": (1536,),
    "ssl_head.weight": (512, 512),
    "ssl_head.bias": (512,),
    "mmcl_head.weight": (512, 512),
    "mmcl_head.bias": (512,),
}


def test_primus_encoder_matches_the_reference_layout():
    encoder = primus_core.create("encoder", "stacked-rnn")
    assert sum(p.numel() for p in encoder.parameters()) == 1_376_204
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == REFERENCE_KEYS
    out = encoder(torch.randn(4, 6, 250))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "emb": (4, 512),
        "ssl": (4, 512),
        "mmcl": (4, 512),
    }
    assert encoder.imu_contract.rate_hz == 50 and encoder.imu_contract.window_samples == 250
    assert encoder.imu_contract.channels[:3] == ["acc_x", "acc_y", "acc_z"]
    assert encoder.output_sizes == {"emb": 512, "ssl": 512, "mmcl": 512}
    # 28.1 M multiply-adds per window forward, the GRU about 95 % of it
    assert encoder.multiply_adds_per_window() == 28_138_496


def test_emb_is_the_last_gru_state_scanning_conv_channels():
    encoder = primus_core.create("encoder", "stacked-rnn").eval()
    x = torch.randn(2, 6, 250)
    features = encoder.backbone[:5](x)
    assert features.shape == (2, 32, 32)
    output, _ = encoder.backbone[5](features)
    torch.testing.assert_close(encoder(x)["emb"], output[:, -1])


def test_imu2clip_variant():
    encoder = primus_core.create("encoder", "stacked-rnn-imu2clip")
    assert encoder.imu_contract.rate_hz == 200 and encoder.imu_contract.window_samples == 1000
    out = encoder(torch.randn(2, 6, 1000))
    assert set(out) == {"emb"} and out["emb"].shape == (2, 512)
    assert isinstance(encoder.backbone[3].net[1], torch.nn.MaxPool1d)


def test_sizes_are_parameters():
    encoder = primus_core.create(
        "encoder",
        "stacked-rnn",
        hidden_size=64,
        ssl_dim=0,
        mmcl_dim=384,
        channels=["a", "b", "c", "d"],
        units=["g"] * 4,
    )
    out = encoder(torch.randn(3, 4, 250))
    assert out["emb"].shape == (3, 64) and out["mmcl"].shape == (3, 384) and "ssl" not in out


def test_bad_encoder_params_name_the_field():
    with pytest.raises(ComponentError, match=r"encoder:stacked-rnn.hidden_size: .*greater than 0"):
        primus_core.create("encoder", "stacked-rnn", hidden_size=0)
    with pytest.raises(ComponentError, match="norm_groups=4 must divide the 6 channels"):
        primus_core.create("encoder", "stacked-rnn", norm_groups=4)
    with pytest.raises(ComponentError, match="too short"):
        primus_core.create("encoder", "stacked-rnn", window_samples=40)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("used", ["both", "output", "last"])
@pytest.mark.parametrize("all_steps_bytes", [None, 0])
def test_hand_written_gru_backward_matches_torch_gru(used, dtype, all_steps_bytes, monkeypatch):
    """The CPU training path (primus_stackrnn.gru) gives torch.nn.GRU's outputs and gradients,
    whichever of its outputs the loss uses (an unused one's gradient arrives as None): to
    1e-10 in float64 (torch operators), to float32 rounding in float32 (where the compiled
    kernels of primus_core.native run, if this machine can build them)."""
    import primus_core.data.gru_scan as gru_scan_module
    import primus_stackrnn.gru as module

    monkeypatch.setenv("PRIMUS_NATIVE_KERNELS", "1")
    monkeypatch.setattr(module, "CHUNK_ROWS", 15)  # chunks of 3 steps at batch 5, the last of 1
    if all_steps_bytes is not None:  # 0: the input projection step by step (inputs > 32 MiB)
        monkeypatch.setattr(gru_scan_module, "ALL_STEPS_BYTES", all_steps_bytes)
    torch.manual_seed(0)
    gru = torch.nn.GRU(7, 11, batch_first=True).to(getattr(torch, dtype))
    x = torch.randn(5, 22, 7, dtype=getattr(torch, dtype), requires_grad=True)
    tolerance = {"atol": 1e-10} if dtype == "float64" else {"atol": 1e-5, "rtol": 1e-4}
    grads = []
    for run in (gru, lambda v: module.gru_sequence(gru, v)):
        x.grad = None
        gru.zero_grad()
        out, h_n = run(x)
        loss = {"both": out.sin().sum() + h_n.cos().sum(), "output": out.sin().sum()}
        loss.get(used, h_n.cos().sum()).backward()
        grads.append([out.detach(), h_n.detach(), x.grad] + [p.grad for p in gru.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, **tolerance)


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_the_hand_written_gru_gives_an_initial_states_gradient_too(kernels, monkeypatch):
    """The encoder starts the GRU from zeros, but the autograd function takes any h0 and
    returns its gradient (the last step's product with W_hh included) as torch.nn.GRU does."""
    import primus_stackrnn.gru as module

    monkeypatch.setenv("PRIMUS_NATIVE_KERNELS", kernels)  # the kernels run in float32 only
    torch.manual_seed(2)
    gru = torch.nn.GRU(4, 9, batch_first=True)
    x = torch.randn(3, 7, 4)
    h0 = torch.randn(3, 9, requires_grad=True)
    weights = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    out, last = module._GRUSequence.apply(x, h0, *weights)
    ours = torch.autograd.grad(out.sin().sum() + last.cos().sum(), h0)[0]
    out, last = gru(x, h0[None])
    expected = torch.autograd.grad(out.sin().sum() + last.cos().sum(), h0)[0]
    assert torch.allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_the_training_gru_keeps_the_states_r_z_and_hn_only(kernels, monkeypatch):
    """What the hand-written GRU saves for backward: per step and row the state, r, z and
    W_hn h + b_hn (4 x hidden values; n is computed again in backward), plus its small inputs
    and weights."""
    import primus_stackrnn.gru as module

    monkeypatch.setenv("PRIMUS_NATIVE_KERNELS", kernels)
    batch, steps, features, hidden = 6, 9, 5, 16
    gru = torch.nn.GRU(features, hidden, batch_first=True)
    x = torch.randn(batch, steps, features, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _, h_n = module.gru_sequence(gru, x)
    per_step = sum(t.numel() for t in saved if t.dim() == 3 and t.shape[-1] % hidden == 0)
    assert per_step == (steps + 1 + 3 * steps) * batch * hidden  # states (and h0), r z, hn
    h_n.sum().backward()
    expected = torch.autograd.grad(gru(x)[1].sum(), x)[0]
    assert torch.allclose(x.grad, expected, atol=1e-5)


def test_the_training_gru_runs_every_step_in_the_kernels_where_they_are_built(monkeypatch):
    """With the compiled kernels, each forward and each backward step of the training GRU is
    one kernel call, and an output the loss does not use sends no gradient (None, not a tensor
    of zeros for the kernel to add)."""
    import primus_stackrnn.gru as module
    from primus_core import native

    monkeypatch.setenv("PRIMUS_NATIVE_KERNELS", "1")
    if native.kernels() is None:
        pytest.skip("no C compiler with OpenMP on this machine: torch operators run instead")
    calls: dict[str, list] = {"forward": [], "backward": []}
    for name in calls:
        bind = getattr(native, f"{name}_steps")

        def recording(*buffers, _name=name, _bind=bind):
            step = _bind(*buffers)

            def record(*args):
                calls[_name].append(args)
                return step(*args)

            return record

        monkeypatch.setattr(native, f"{name}_steps", recording)
    steps = 9
    gru = torch.nn.GRU(5, 16, batch_first=True)
    x = torch.randn(6, steps, 5, requires_grad=True)
    _, h_n = module.gru_sequence(gru, x)
    assert len(calls["forward"]) == steps and not calls["backward"]
    h_n.sum().backward()
    assert len(calls["backward"]) == steps
    assert [args[0] for args in calls["backward"]] == list(range(steps - 1, -1, -1))
    assert all(args[3] is None for args in calls["backward"])  # grad_out: the output is unused


def test_only_one_layer_batch_first_grus_with_biases_take_the_hand_written_path():
    from primus_stackrnn.gru import supports_fused

    assert supports_fused(torch.nn.GRU(3, 4, batch_first=True))
    for gru in (
        torch.nn.GRU(3, 4, num_layers=2, batch_first=True),
        torch.nn.GRU(3, 4, bidirectional=True, batch_first=True),
        torch.nn.GRU(3, 4, bias=False, batch_first=True),
        torch.nn.GRU(3, 4),  # time-major
    ):
        assert not supports_fused(gru)


def test_training_and_inference_paths_agree():
    torch.manual_seed(0)
    from primus_core.components import create

    encoder = create("encoder", "stacked-rnn", hidden_size=32, ssl_dim=8, mmcl_dim=8)
    x = torch.randn(3, 6, 250)
    with torch.no_grad():
        expected = encoder(x)["mmcl"]
    assert torch.allclose(encoder(x)["mmcl"], expected, atol=1e-5)


def test_a_training_pass_under_cpu_autocast_takes_torch_gru():
    """Under CPU bf16 autocast the GRU's input arrives in bfloat16 while its weights are float32:
    the hand-written path (same-dtype products) steps aside for torch.nn.GRU."""
    from primus_core.components import create

    torch.manual_seed(0)
    encoder = create("encoder", "stacked-rnn", hidden_size=16, ssl_dim=8, mmcl_dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(torch.randn(3, 6, 250))["mmcl"]
    out.float().sum().backward()
    assert encoder.backbone[5].weight_hh_l0.grad is not None


@pytest.mark.parametrize("affine", [True, False])
def test_the_first_norm_folded_into_the_conv_gives_the_same_values_and_gradients(affine):
    """norm_then_conv (the training path of the first block): conv(norm(x)) with the norm's
    scale and shift in the conv's weights, so that the conv's backward has no input gradient
    to compute."""
    from primus_stackrnn.encoder import norm_then_conv

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(2, 6, affine=affine).double()
    conv = torch.nn.Conv1d(6, 8, 10, dilation=2, bias=False).double()
    if affine:
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = 3 * torch.randn(4, 6, 60, dtype=torch.float64) + 1
    grads = []
    for run in (lambda: conv(norm(x)), lambda: norm_then_conv(x, norm, conv)):
        norm.zero_grad()
        conv.zero_grad()
        y = run()
        (y.sin().sum()).backward()
        grads.append([y.detach()] + [p.grad for p in (*norm.parameters(), conv.weight)])
    for plain, folded in zip(*grads, strict=True):
        assert torch.allclose(plain, folded, atol=1e-12)
    folded = norm_then_conv(x, norm, conv)
    assert folded.grad_fn.next_functions[0][0] is None  # the conv's input: no gradient


def test_training_uses_the_folded_norm_unless_the_input_needs_a_gradient(monkeypatch):
    import primus_stackrnn.encoder as module

    encoder = primus_core.create("encoder", "stacked-rnn", hidden_size=16, ssl_dim=0)
    calls = []
    original = module.norm_then_conv
    monkeypatch.setattr(module, "norm_then_conv", lambda *a: calls.append(1) or original(*a))
    x = torch.randn(3, 6, 250)
    folded = encoder(x)["mmcl"]
    assert calls == [1]
    plain = encoder(x.clone().requires_grad_())["mmcl"]  # saliency maps: the plain blocks
    with torch.no_grad():
        inference = encoder(x)["mmcl"]
    assert calls == [1]
    assert torch.allclose(folded, plain, atol=1e-6) and torch.allclose(folded, inference, atol=1e-6)
