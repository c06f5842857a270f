"""The `nn` loss honours the InfoNCE switches of docs/fidelity.md (`masked_rows`,
`temperature_param`, `min_temperature`) in both of its terms, checked against an independent
float64 numpy InfoNCE on a queue whose neighbours are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import primus_core
from primus_objectives import StepBatch

PERM = [2, 0, 3, 1]  # batch row r is queue slot PERM[r]'s teacher again: its neighbour


def rand(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def normed(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def np_infonce(q, k, tau, mask=None, masked_rows="removed") -> float:
    """Symmetric InfoNCE in float64 numpy. `removed`: the loss of the sub-batch of set rows;
    `negatives`: every row stays in both softmaxes, the diagonal terms averaged over set rows."""
    q, k = normed(q), normed(k)
    m = np.ones(len(q), bool) if mask is None else np.asarray(mask, bool)
    if masked_rows == "removed":
        q, k, m = q[m], k[m], m[m]
    if not m.any():
        return 0.0
    logits = q @ k.T / tau
    diag = np.diag(logits)
    over_cols = np.log(np.exp(logits).sum(axis=1)) - diag
    over_rows = np.log(np.exp(logits).sum(axis=0)) - diag
    return float(over_cols[m].mean() + over_rows[m].mean())


def filled_loss(**params):
    """An `nn` loss whose 4-slot queue holds batch A (text everywhere, no video in slot 2), and
    batch B whose teachers are A's in the order PERM (B row 0 has no video either)."""
    loss = primus_core.create("loss", "nn", queue_size=4, ssl_coeff=0.3, **params)
    loss.train()
    a_imu = {name: rand(4, 5, seed=10 + i) for i, name in enumerate(("emb", "ssl", "mmcl"))}
    a_text, a_video = rand(4, 5, seed=20), rand(4, 5, seed=21)
    loss(
        StepBatch(
            imu=a_imu,
            teachers={"text": a_text, "video": a_video},
            teacher_mask={
                "text": torch.ones(4, dtype=torch.bool),
                "video": torch.tensor([True, True, False, True]),
            },
        )
    )
    b_imu = {name: rand(4, 5, seed=30 + i) for i, name in enumerate(("emb", "ssl", "mmcl"))}
    batch = StepBatch(
        imu=b_imu,
        teachers={"text": a_text[PERM], "video": a_video[PERM]},
        teacher_mask={
            "text": torch.ones(4, dtype=torch.bool),
            "video": torch.tensor([False, True, True, True]),
        },
    )
    return loss, batch, {"ssl": a_imu["ssl"], "text": a_text, "video": a_video}


def expected_terms(batch, queue, tau_mm, tau_ss, masked_rows):
    video_mask = [False, True, True, True]  # slot PERM[0] = 2 holds no video
    text = np_infonce(batch.imu["mmcl"], queue["text"][PERM], tau_mm, None, masked_rows)
    video = np_infonce(batch.imu["mmcl"], queue["video"][PERM], tau_mm, video_mask, masked_rows)
    imu = np_infonce(batch.imu["ssl"], queue["ssl"][PERM], tau_ss, None, masked_rows)
    return {"text": text, "video": video, "imu": imu, "total": 0.7 * (text + video) + 0.3 * imu}


@pytest.mark.parametrize("masked_rows", ["negatives", "removed"])
def test_nn_masked_rows_switch_matches_numpy(masked_rows):
    loss, batch, queue = filled_loss(masked_rows=masked_rows)
    index, found = loss.lookup(batch)
    assert index.tolist() == PERM and found.all()
    total, terms = loss(batch)
    want = expected_terms(batch, queue, 0.1, 0.1, masked_rows)
    for name in ("text", "video", "imu"):
        assert terms[name].item() == pytest.approx(want[name], rel=1e-5), name
    assert total.item() == pytest.approx(want["total"], rel=1e-5)
    # the switch matters here: the video term differs between the two
    other = "removed" if masked_rows == "negatives" else "negatives"
    assert want["video"] != pytest.approx(
        expected_terms(batch, queue, 0.1, 0.1, other)["video"], rel=1e-3
    )


def test_nn_removed_masked_row_changes_nothing_in_the_video_term():
    loss, batch, _ = filled_loss(masked_rows="removed")
    _, before = loss(batch)
    loss2, batch2, _ = filled_loss(masked_rows="removed")
    batch2.imu["mmcl"][0] = 50.0 * rand(5, seed=99)  # row 0: no video neighbour
    _, after = loss2(batch2)
    assert after["video"].item() == pytest.approx(before["video"].item(), rel=1e-6)
    assert after["text"].item() != pytest.approx(before["text"].item(), rel=1e-3)


def test_nn_temperature_switches_reach_both_of_its_infonce_terms():
    """`temperature_param: tau` (default): the parameter is tau itself, unclamped; `log_tau`
    with `min_temperature: 0.01`: the parameter is log tau, tau clamped from below at 0.01."""
    loss, batch, queue = filled_loss()
    assert loss.mm_infonce.raw_temperature.item() == pytest.approx(0.1)
    with torch.no_grad():
        loss.mm_infonce.raw_temperature.fill_(0.05)
        loss.ss_infonce.raw_temperature.fill_(0.005)  # no clamp under the reference setting
    _, terms = loss(batch)
    want = expected_terms(batch, queue, 0.05, 0.005, "negatives")
    assert terms["text"].item() == pytest.approx(want["text"], rel=1e-5)
    assert terms["imu"].item() == pytest.approx(want["imu"], rel=1e-5)

    loss, batch, queue = filled_loss(temperature_param="log_tau", min_temperature=0.01)
    assert loss.mm_infonce.raw_temperature.item() == pytest.approx(math.log(0.1))
    with torch.no_grad():
        loss.mm_infonce.raw_temperature.fill_(math.log(0.05))
        loss.ss_infonce.raw_temperature.fill_(math.log(0.001))  # clamped to 0.01
    total, terms = loss(batch)
    want = expected_terms(batch, queue, 0.05, 0.01, "negatives")
    assert terms["text"].item() == pytest.approx(want["text"], rel=1e-5)
    assert terms["video"].item() == pytest.approx(want["video"], rel=1e-5)
    assert terms["imu"].item() == pytest.approx(want["imu"], rel=1e-5)
    # log tau is what is learnt: d total / d log tau_mm = tau_mm x d total / d tau_mm
    total.backward()
    h = 1e-4
    up = expected_terms(batch, queue, 0.05 * math.exp(h), 0.01, "negatives")["total"]
    down = expected_terms(batch, queue, 0.05 * math.exp(-h), 0.01, "negatives")["total"]
    assert loss.mm_infonce.raw_temperature.grad.item() == pytest.approx(
        (up - down) / (2 * h), rel=1e-3
    )
    assert loss.ss_infonce.raw_temperature.grad.item() == pytest.approx(0.0, abs=1e-9)
