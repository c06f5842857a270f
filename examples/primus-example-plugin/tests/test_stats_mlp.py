import torch

import primus_core


def test_stats_mlp_is_registered_and_embeds():
    encoder = primus_core.create("encoder", "stats-mlp", hidden_size=16, mmcl_dim=8)
    out = encoder(torch.randn(3, 6, 250))
    assert out["emb"].shape == (3, 16) and out["mmcl"].shape == (3, 8)
    assert encoder.imu_contract.window_samples == 250
