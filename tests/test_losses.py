"""InfoNCE and the PRIMUS objectives (ss, mm, nn, supervised) against small cases computed by hand
and by an independent numpy reference; the NN queue's FIFO order, wrap-around, checkpoint round
trip and its all_gather under torch.distributed (2 CPU processes, gloo)."""

from __future__ import annotations

import io
import math
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import primus_core
import primus_objectives
from primus_core.errors import ComponentError, DataError
from primus_objectives import (
    InfoNCE,
    MultimodalLoss,
    NearestNeighbourLoss,
    SelfSupervisedLoss,
    StepBatch,
    SupervisedLoss,
)


# ---------------------------------------------------------------- independent re-implementations
def np_reference_infonce(q, k, tau=0.1, mask=None) -> float:
    """The reference's symmetric InfoNCE with a mask (lib/loss.py info_nce), in float64 numpy:
    log-softmax over dim 0 and over dim 1 of the full logits (masked rows stay as negatives),
    each direction's diagonal losses averaged over the rows whose mask is set; no set row: 0."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)  # as F.normalize
    k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    logits = q @ k.T / tau
    m = np.ones(len(q)) if mask is None else np.asarray(mask, np.float64)
    if m.sum() == 0:
        return 0.0
    diag = np.diag(logits)
    over_rows = np.log(np.exp(logits).sum(axis=0)) - diag  # softmax over dim 0 (columns)
    over_cols = np.log(np.exp(logits).sum(axis=1)) - diag  # softmax over dim 1 (rows)
    return float((over_rows * m).sum() / m.sum() + (over_cols * m).sum() / m.sum())


def np_infonce(q, k, tau=0.1, mask=None) -> float:
    """Symmetric InfoNCE of the sub-batch of rows selected by mask, in float64 numpy (primus's
    ``masked_rows: removed``)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    if mask is not None:
        keep = np.asarray(mask, bool)
        q, k = q[keep], k[keep]
    if len(q) == 0:
        return 0.0
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = q @ k.T / tau

    def ce(rows):
        top = rows.max(axis=1, keepdims=True)
        lse = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
        return float(np.mean(lse - np.diag(rows)))

    return ce(logits) + ce(logits.T)


def num(value: torch.Tensor) -> float:
    return value.detach().item()


def normed(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def rand(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- InfoNCE
def test_infonce_2x2_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[2.0, 0.0], [0.6, 0.8]])  # normalises to (1, 0), (0.6, 0.8)
    # logits = q k^T / 0.1 = [[10, 6], [0, 8]]
    rows = ((-10 + math.log(math.exp(10) + math.exp(6))) + (-8 + math.log(1 + math.exp(8)))) / 2
    cols = ((-10 + math.log(math.exp(10) + 1)) + (-8 + math.log(math.exp(6) + math.exp(8)))) / 2
    loss = primus_core.create("loss", "infonce", temperature=0.1)
    assert num(loss(q, k)) == pytest.approx(rows + cols, rel=1e-5)
    assert num(loss.temperature) == pytest.approx(0.1)


def test_infonce_masked_rows_stay_as_negatives_by_default_as_in_the_reference():
    q, k = rand(6, 8, seed=1), rand(6, 8, seed=2)
    mask = torch.tensor([True, False, True, True, False, True])
    loss = InfoNCE()
    assert loss.config.masked_rows == "negatives"
    assert num(loss(q, k, mask)) == pytest.approx(np_reference_infonce(q, k, mask=mask), rel=1e-5)
    assert num(loss(q, k)) == pytest.approx(np_reference_infonce(q, k), rel=1e-5)
    # a masked row is still a negative: changing its key changes the loss of the others
    k2 = k.clone()
    k2[4] = q[0] * 5
    assert num(loss(q, k2, mask)) != pytest.approx(num(loss(q, k, mask)), rel=1e-3)
    assert num(loss(q, k2, mask)) == pytest.approx(np_reference_infonce(q, k2, mask=mask), rel=1e-5)
    # it differs from removing the rows, and both agree without a mask
    removed = InfoNCE(primus_objectives.InfoNCEConfig(masked_rows="removed"))
    assert num(loss(q, k, mask)) != pytest.approx(num(removed(q, k, mask)), rel=1e-3)
    assert num(loss(q, k)) == pytest.approx(num(removed(q, k)), rel=1e-6)
    # all-zero mask: exactly 0, as the reference returns
    assert num(loss(q, k, torch.zeros(6, dtype=torch.bool))) == 0.0


def test_infonce_removed_rows_match_numpy_and_masked_rows_are_dropped():
    q, k = rand(6, 8, seed=1), rand(6, 8, seed=2)
    mask = torch.tensor([True, False, True, True, False, True])
    loss = primus_core.create("loss", "infonce", masked_rows="removed")
    assert num(loss(q, k)) == pytest.approx(np_infonce(q, k), rel=1e-5)
    assert num(loss(q, k, mask)) == pytest.approx(np_infonce(q, k, mask=mask), rel=1e-5)
    # masked rows are neither queries nor keys: changing them changes nothing
    q2, k2 = q.clone(), k.clone()
    q2[1], k2[4] = 100.0, -3.0
    assert num(loss(q2, k2, mask)) == pytest.approx(num(loss(q, k, mask)), rel=1e-6)
    # with a full mask it is the unmasked loss
    assert num(loss(q, k, torch.ones(6, dtype=torch.bool))) == pytest.approx(num(loss(q, k)))


@pytest.mark.parametrize("masked_rows", ["negatives", "removed"])
def test_infonce_all_zero_mask_is_exactly_zero_with_a_graph(masked_rows):
    q = rand(4, 3, seed=3).requires_grad_()
    loss = primus_core.create("loss", "infonce", masked_rows=masked_rows)
    value = loss(q, rand(4, 3, seed=4), torch.zeros(4, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(q.grad, torch.zeros_like(q)) and torch.isfinite(q.grad).all()


def numeric_tau_gradient(q, k, tau, mask=None, h=1e-6) -> float:
    """d loss / d tau of the numpy reference, by central differences."""
    up = np_reference_infonce(q, k, tau + h, mask)
    down = np_reference_infonce(q, k, tau - h, mask)
    return (up - down) / (2 * h)


def test_infonce_learns_tau_itself_unclamped_by_default_as_in_the_reference():
    q, k = rand(5, 4, seed=5), rand(5, 4, seed=6)
    mask = torch.tensor([True, True, False, True, True])
    loss = primus_core.create("loss", "infonce", temperature=0.1)
    assert loss.config.temperature_param == "tau" and loss.config.min_temperature is None
    assert num(loss.raw_temperature) == pytest.approx(0.1)  # the parameter is tau
    loss(q, k, mask).backward()
    want = numeric_tau_gradient(q, k, 0.1, mask)
    assert loss.raw_temperature.grad.item() == pytest.approx(want, rel=1e-4)
    with torch.no_grad():
        loss.raw_temperature.fill_(0.001)
    assert num(loss.temperature) == pytest.approx(0.001)  # unclamped
    fixed = primus_core.create("loss", "infonce", learn_temperature=False)
    assert not fixed.raw_temperature.requires_grad


def test_infonce_log_tau_is_clamped_and_its_gradient_is_tau_times_dtau():
    q, k = rand(5, 4, seed=5).requires_grad_(), rand(5, 4, seed=6)
    loss = primus_core.create(
        "loss", "infonce", temperature=0.2, temperature_param="log_tau", min_temperature=0.01
    )
    assert num(loss.raw_temperature) == pytest.approx(math.log(0.2))
    assert num(loss(q, k)) == pytest.approx(np_infonce(q.detach(), k, tau=0.2), rel=1e-5)
    loss(q, k).backward()
    want = 0.2 * numeric_tau_gradient(q.detach(), k, 0.2)  # chain rule: dL/dlog(tau)
    assert loss.raw_temperature.grad.item() == pytest.approx(want, rel=1e-4)
    with torch.no_grad():
        loss.raw_temperature.fill_(-50.0)
    assert num(loss.temperature) == pytest.approx(0.01)  # clamped, never 0


def test_shared_temperatures_give_one_multimodal_and_one_ssl_tau():
    from primus_core.training.trainer import share_temperatures

    losses = {
        "ss": primus_core.create("loss", "ss"),
        "mm": primus_core.create("loss", "mm"),
        "nn": primus_core.create("loss", "nn", queue_size=8),
    }
    separate = torch.nn.ModuleDict(losses)
    assert sum(1 for n, _ in separate.named_parameters() if "temperature" in n) == 4
    users = share_temperatures(losses)
    assert users == {
        "self-supervised": ["ss.infonce", "nn.ss_infonce"],
        "multimodal": ["mm.infonce", "nn.mm_infonce"],
    }
    assert losses["nn"].mm_infonce is losses["mm"].infonce
    assert losses["nn"].ss_infonce is losses["ss"].infonce
    shared = torch.nn.ModuleDict(losses)
    assert sum(1 for n, _ in shared.named_parameters() if "temperature" in n) == 2
    # the NN term's gradient lands on the multimodal tau
    batch = nn_batch(4, 7)
    losses["nn"](batch)  # fills the queue
    total, _ = losses["nn"](nn_batch(4, 8))
    total.backward()
    assert losses["mm"].infonce.raw_temperature.grad is not None


def test_infonce_rejects_bad_input():
    with pytest.raises(ComponentError, match="same shape"):
        InfoNCE()(rand(3, 4), rand(2, 4))
    with pytest.raises(ComponentError, match="building block"):
        InfoNCE()(StepBatch(imu={"emb": rand(2, 3)}))
    with pytest.raises(ComponentError, match="temperature"):
        primus_core.create("loss", "infonce", temperature=0)


def test_infonce_function_defaults_to_the_reference_and_one_set_row_is_its_own_mean():
    from primus_objectives.infonce import info_nce

    q, k = rand(4, 3, seed=90), rand(4, 3, seed=91)
    assert num(info_nce(q, k, 0.1)) == pytest.approx(np_reference_infonce(q, k), rel=1e-5)
    one = torch.tensor([False, False, True, False])
    for masked_rows, oracle in (("negatives", np_reference_infonce), ("removed", np_infonce)):
        value = info_nce(q, k, 0.1, one, masked_rows=masked_rows)
        assert num(value) == pytest.approx(oracle(q, k, mask=one), rel=1e-5)
    loss = InfoNCE()
    assert loss.modalities == () and loss.needs_augmented_view is False
    assert loss.needs_labels is False


def test_infonce_errors_say_what_was_given():
    from primus_objectives.infonce import info_nce

    q = rand(4, 3)
    cases = {
        "infonce: query and key must both be (N, D) of the same shape, got (4, 3) and (3, 3)": (
            lambda: info_nce(q, q[:3], 0.1)
        ),
        "infonce: masked_rows must be 'negatives' or 'removed', not 'dropped'": (
            lambda: info_nce(q, q, 0.1, masked_rows="dropped")
        ),
        "infonce: mask has 3 rows, the batch 4": lambda: info_nce(q, q, 0.1, torch.ones(3)),
        "'infonce' is a building block called as loss(query, key, mask); in a recipe use the "
        "objectives 'ss', 'mm' or 'nn'": lambda: InfoNCE()(q),
    }
    for message, call in cases.items():
        with pytest.raises(ComponentError) as caught:
            call()
        assert str(caught.value) == message


# ---------------------------------------------------------------- ss, mm, supervised
def outputs(rows: int, seed: int, dim: int = 4) -> dict[str, torch.Tensor]:
    return {name: rand(rows, dim, seed=seed + i) for i, name in enumerate(("emb", "ssl", "mmcl"))}


def test_ss_is_c_times_infonce_of_raw_against_augmented_view():
    imu, aug = outputs(4, 10), outputs(4, 20)
    loss = primus_core.create("loss", "ss", ssl_coeff=0.3)
    assert isinstance(loss, SelfSupervisedLoss)
    assert loss.needs_augmented_view and not loss.needs_labels and loss.modalities == ()
    total, terms = loss(StepBatch(imu=imu, imu_aug=aug))
    expected = np_infonce(imu["ssl"], aug["ssl"])
    assert num(total) == pytest.approx(0.3 * expected, rel=1e-5)
    assert num(terms["infonce"]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ComponentError, match="augmented view"):
        loss(StepBatch(imu=imu))


def test_mm_sums_available_modalities_with_masks():
    imu = outputs(5, 30)
    text, video = rand(5, 4, seed=40), rand(5, 4, seed=41)
    text_mask = torch.tensor([True, True, False, True, True])
    video_mask = torch.tensor([False, True, True, True, False])
    loss = primus_core.create("loss", "mm")
    assert loss.modalities == ("text", "video") and not loss.needs_augmented_view
    batch = StepBatch(
        imu=imu,
        teachers={"text": text, "video": video},
        teacher_mask={"text": text_mask, "video": video_mask},
    )
    total, terms = loss(batch)
    t = np_reference_infonce(imu["mmcl"], text, mask=text_mask)
    v = np_reference_infonce(imu["mmcl"], video, mask=video_mask)
    assert num(total) == pytest.approx(0.5 * (t + v), rel=1e-5)
    removed = primus_core.create("loss", "mm", masked_rows="removed")
    t_removed = np_infonce(imu["mmcl"], text, mask=text_mask)
    v_removed = np_infonce(imu["mmcl"], video, mask=video_mask)
    assert num(removed(batch)[0]) == pytest.approx(0.5 * (t_removed + v_removed), rel=1e-5)
    assert num(terms["text"]) == pytest.approx(t, rel=1e-5)
    # video absent from the batch: skipped
    total, terms = loss(
        StepBatch(imu=imu, teachers={"text": text}, teacher_mask={"text": text_mask})
    )
    assert set(terms) == {"text", "tau"} and num(total) == pytest.approx(0.5 * t, rel=1e-5)
    # no modality at all: 0, still differentiable
    mmcl = imu["mmcl"].clone().requires_grad_()
    total, _ = loss(StepBatch(imu={**imu, "mmcl": mmcl}))
    total.backward()
    assert total.item() == 0.0 and mmcl.grad is not None


def test_mm_names_the_size_mismatch():
    loss = MultimodalLoss()
    batch = StepBatch(imu=outputs(3, 1), teachers={"text": rand(3, 7)})
    with pytest.raises(ComponentError, match="mmcl_dim"):
        loss(batch)
    with pytest.raises(ComponentError, match="modality"):
        primus_core.create("loss", "mm", modalities=["text", "imu"])


def test_supervised_cross_entropy_ignores_unknown_labels():
    imu = outputs(4, 50, dim=6)
    labels = torch.tensor([0, 2, -1, 1])
    loss = primus_core.create("loss", "supervised", num_classes=3, in_features=6)
    assert isinstance(loss, SupervisedLoss) and loss.needs_labels
    total, terms = loss(StepBatch(imu=imu, labels=labels))
    with torch.no_grad():
        logits = loss.classifier(imu["emb"]).double().numpy()
    keep = labels.numpy() >= 0
    lse = np.log(np.exp(logits).sum(axis=1))
    expected = np.mean((lse - logits[np.arange(4), labels.clamp(min=0).numpy()])[keep])
    assert num(total) == pytest.approx(expected, rel=1e-5)
    assert 0.0 <= num(terms["accuracy"]) <= 1.0
    none_known, _ = loss(StepBatch(imu=imu, labels=torch.full((4,), -1)))
    assert none_known.item() == 0.0
    with pytest.raises(DataError, match="num_classes"):
        loss(StepBatch(imu=imu, labels=torch.tensor([0, 3, 1, 1])))
    with pytest.raises(ComponentError, match="labels"):
        loss(StepBatch(imu=imu))
    with pytest.raises(ComponentError, match="in_features"):
        primus_core.create("loss", "supervised", num_classes=3)(StepBatch(imu=imu, labels=labels))


def test_mm_skips_a_missing_first_modality_and_still_uses_the_next():
    imu, text = outputs(4, 60), rand(4, 4, seed=61)
    loss = primus_core.create("loss", "mm", modalities=["video", "text"], ssl_coeff=0.25)
    total, terms = loss(StepBatch(imu=imu, teachers={"text": text}))
    expected = np_reference_infonce(imu["mmcl"], text)
    assert num(total) == pytest.approx(0.75 * expected, rel=1e-5)
    assert set(terms) == {"text", "tau"}


def test_losses_log_their_terms_and_temperature():
    imu, aug = outputs(4, 70), outputs(4, 71)
    _, ss_terms = primus_core.create("loss", "ss")(StepBatch(imu=imu, imu_aug=aug))
    _, mm_terms = primus_core.create("loss", "mm")(
        StepBatch(imu=imu, teachers={"text": rand(4, 4, seed=72)})
    )
    for terms in (ss_terms, mm_terms):
        assert num(terms["tau"]) == pytest.approx(0.1, rel=1e-6)  # the reference's initial tau


def test_supervised_accuracy_counts_only_known_labels_by_hand():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    loss = primus_core.create("loss", "supervised", num_classes=2, in_features=2)
    with torch.no_grad():  # class c scores feature c: the prediction is the larger feature
        loss.classifier.weight.copy_(torch.eye(2))
        loss.classifier.bias.zero_()
    imu = {"emb": features}
    # predictions 0, 1, 0, 1; labels: right, wrong, unknown, right -> 2 of 3 known rows
    _, terms = loss(StepBatch(imu=imu, labels=torch.tensor([0, 0, -1, 1])))
    assert num(terms["accuracy"]) == pytest.approx(2 / 3)
    lse = math.log(1 + math.e)
    assert num(terms["ce"]) == pytest.approx((2 * (lse - 1) + lse) / 3, rel=1e-6)
    # one known row, predicted right: accuracy 1 (not 1/2)
    _, terms = loss(StepBatch(imu=imu, labels=torch.tensor([-1, 1, -1, -1])))
    assert num(terms["accuracy"]) == 1.0
    _, terms = loss(StepBatch(imu=imu, labels=torch.tensor([-1, 0, -1, -1])))
    assert num(terms["accuracy"]) == 0.0


def test_loss_errors_name_the_loss_the_head_and_the_sizes():
    imu = outputs(3, 80)
    without_ssl = {"emb": imu["emb"], "mmcl": imu["mmcl"]}
    messages = {
        "loss 'ss' needs the encoder head 'ssl' (outputs: emb, mmcl)": lambda: primus_core.create(
            "loss", "ss"
        )(StepBatch(imu=without_ssl, imu_aug=without_ssl)),
        "loss 'ss' needs the encoder head 'ssl' (outputs: emb, mmcl) [augmented view]": lambda: (
            primus_core.create("loss", "ss")(StepBatch(imu=imu, imu_aug=without_ssl))
        ),
        "loss 'ss' needs the augmented view (batch.imu_aug is None)": lambda: primus_core.create(
            "loss", "ss"
        )(StepBatch(imu=imu)),
        "loss 'mm' needs the encoder head 'mmcl' (outputs: emb)": lambda: primus_core.create(
            "loss", "mm"
        )(StepBatch(imu={"emb": imu["emb"]})),
        "loss 'mm': the mmcl head is 4-d but the text teacher gives 7-d embeddings; set the "
        "encoder's mmcl_dim to the teacher's size": lambda: primus_core.create("loss", "mm")(
            StepBatch(imu=imu, teachers={"text": rand(3, 7)})
        ),
        "loss 'supervised' needs the encoder head 'ssl' (outputs: none)": lambda: (
            primus_core.create("loss", "supervised", head="ssl", num_classes=2, in_features=4)(
                StepBatch(imu={}, labels=torch.zeros(3))
            )
        ),
        "loss 'supervised' needs labels (batch.labels is None)": lambda: primus_core.create(
            "loss", "supervised", num_classes=2, in_features=4
        )(StepBatch(imu=imu)),
        "loss 'supervised': in_features is 5 but the encoder's 'emb' is 4-d": lambda: (
            primus_core.create("loss", "supervised", num_classes=2, in_features=5)(
                StepBatch(imu=imu, labels=torch.zeros(3))
            )
        ),
        "loss 'supervised': a label is >= num_classes (2)": lambda: primus_core.create(
            "loss", "supervised", num_classes=2, in_features=4
        )(StepBatch(imu=imu, labels=torch.tensor([0, 2, 1]))),
    }
    for message, call in messages.items():
        with pytest.raises((ComponentError, DataError)) as caught:
            call()
        assert str(caught.value) == message.removesuffix(" [augmented view]")


# ---------------------------------------------------------------- nn: queues and lookup
def nn_batch(rows: int, seed: int, video_mask=None, text_mask=None, dim: int = 4) -> StepBatch:
    teachers = {"text": rand(rows, dim, seed=seed + 100), "video": rand(rows, dim, seed=seed + 200)}
    masks = {
        "text": torch.ones(rows, dtype=torch.bool) if text_mask is None else text_mask,
        "video": torch.ones(rows, dtype=torch.bool) if video_mask is None else video_mask,
    }
    return StepBatch(imu=outputs(rows, seed, dim), teachers=teachers, teacher_mask=masks)


def test_nn_with_an_empty_queue_is_zero_then_fills_the_queue():
    loss = primus_core.create("loss", "nn", queue_size=16)
    assert isinstance(loss, NearestNeighbourLoss) and loss.modalities == ("text", "video")
    batch = nn_batch(3, 0)
    mmcl = batch.imu["mmcl"].requires_grad_()
    total, terms = loss(batch)
    assert total.item() == 0.0 and num(terms["found"]) == 0.0
    total.backward()
    assert mmcl.grad is not None
    assert int(loss.queue_count) == 3 and int(loss.queue_ptr) == 3
    assert loss.queue("imu").shape == (16, 4) and loss.queue("video").shape == (16, 4)


def test_nn_looks_up_by_text_when_the_batch_has_no_video_and_no_masks():
    loss = primus_core.create("loss", "nn", queue_size=8)  # looks up by video first, then text
    text = rand(4, 4, seed=300)
    loss.train()
    loss(StepBatch(imu=outputs(4, 301), teachers={"text": text}))  # fills slots 0-3, no masks
    order = torch.tensor([2, 0, 3, 1])
    index, found = loss.lookup(StepBatch(imu=outputs(4, 302), teachers={"text": text[order]}))
    assert found.all() and index.tolist() == order.tolist()  # each text finds itself


def test_nn_queues_are_shaped_in_place_and_refuse_a_changed_width():
    loss = primus_core.create("loss", "nn", queue_size=8)
    held = loss.queue("imu")  # what a DDP wrapper holds from construction on
    loss.train()
    loss(nn_batch(2, 310))
    assert loss.queue("imu") is held and held.shape == (8, 4)
    wider = nn_batch(2, 311, dim=5)
    for call, name in ((loss.enqueue, "queue_imu"), (loss.lookup, "queue_video")):
        with pytest.raises(ComponentError) as caught:
            call(wider)
        assert str(caught.value) == (
            f"loss 'nn': {name} is (8, 4) but this batch needs (8, 5) (embedding sizes changed)"
        )
    # an empty buffer on another device is replaced by one of the right shape there
    other = primus_core.create("loss", "nn", queue_size=8)
    other._allocate("queue_text", (8, 3), torch.device("meta"))
    assert other.queue("text").shape == (8, 3) and other.queue("text").device.type == "meta"


def test_nn_loads_a_checkpoint_that_lacks_some_queues():
    text_only = primus_core.create("loss", "nn", queue_size=8, modalities=["text"])
    text_only.train()
    text_only(StepBatch(imu=outputs(3, 320), teachers={"text": rand(3, 4, seed=321)}))
    both = primus_core.create("loss", "nn", queue_size=8)
    missing, unexpected = both.load_state_dict(text_only.state_dict(), strict=False)
    assert sorted(missing) == ["has_video", "queue_video"] and unexpected == []
    assert torch.equal(both.queue("text"), text_only.queue("text"))
    assert int(both.queue_count) == 3


def test_nn_overwritten_slots_lose_a_modality_the_new_batch_lacks():
    loss = primus_core.create("loss", "nn", queue_size=4)
    loss.train()
    loss(nn_batch(4, 330))  # every slot has text and video
    loss(StepBatch(imu=outputs(2, 331), teachers={"text": rand(2, 4, seed=332)}))  # slots 0, 1
    assert loss.has("video").tolist() == [False, False, True, True]
    assert loss.has("text").tolist() == [True, True, True, True]


def test_nn_uses_a_later_modality_when_an_earlier_queue_was_never_filled():
    loss = primus_core.create("loss", "nn", queue_size=8)  # modalities text, video
    loss.train()
    video_only = StepBatch(imu=outputs(3, 340), teachers={"video": rand(3, 4, seed=341)})
    loss(video_only)  # the text queue stays unallocated
    _, terms = loss(video_only)
    assert "video" in terms and "text" not in terms and num(terms["found"]) == 1.0


def test_nn_errors_name_the_loss():
    loss = primus_core.create("loss", "nn", queue_size=8)
    loss.train()
    loss(nn_batch(3, 350))
    imu = outputs(3, 351)
    wide = {**imu, "mmcl": rand(3, 5, seed=352)}
    cases = [
        (
            "loss 'nn' needs the encoder head 'mmcl' (outputs: emb, ssl)",
            lambda: loss(StepBatch(imu={"emb": imu["emb"], "ssl": imu["ssl"]})),
        ),
        (
            "loss 'nn' needs the encoder head 'ssl' (outputs: emb, mmcl)",
            lambda: loss(StepBatch(imu={"emb": imu["emb"], "mmcl": imu["mmcl"]})),
        ),
        (
            "loss 'nn' needs the encoder head 'ssl' (outputs: emb)",
            lambda: loss.enqueue(StepBatch(imu={"emb": imu["emb"]})),
        ),
        (
            "loss 'nn': the mmcl head is 5-d but the text teacher gives 4-d embeddings; set the "
            "encoder's mmcl_dim to the teacher's size",
            lambda: loss(StepBatch(imu=wide, teachers=nn_batch(3, 353).teachers)),
        ),
    ]
    for message, call in cases:
        with pytest.raises(ComponentError) as caught:
            call()
        assert str(caught.value) == message


def test_nn_looks_up_by_text_before_a_modality_of_its_own():
    loss = primus_core.create("loss", "nn", queue_size=2, modalities=["audio", "text"])
    text, audio = rand(2, 4, seed=360), rand(2, 4, seed=361)
    loss.train()
    loss(StepBatch(imu=outputs(2, 362), teachers={"text": text, "audio": audio}))
    # text points at slot 0, audio at slot 1: video, text, then the others in config order
    query = StepBatch(imu=outputs(1, 363), teachers={"text": text[:1], "audio": audio[1:]})
    index, found = loss.lookup(query)
    assert found.tolist() == [True] and index.tolist() == [0]
    index, _ = loss.lookup(StepBatch(imu=outputs(1, 364), teachers={"audio": audio[1:]}))
    assert index.tolist() == [1]


def test_nn_queue_is_fifo_and_wraps_around():
    loss = NearestNeighbourLoss(
        primus_core.components.validate_params("loss", "nn", {"queue_size": 5})
    )
    first, second = nn_batch(3, 1), nn_batch(3, 2)
    loss(first)
    loss(second)
    assert int(loss.queue_ptr) == 1 and int(loss.queue_count) == 5
    imu = loss.queue("imu").numpy()
    want = {
        0: second.imu["ssl"][2],
        1: first.imu["ssl"][1],
        2: first.imu["ssl"][2],
        3: second.imu["ssl"][0],
        4: second.imu["ssl"][1],
    }
    for slot, row in want.items():
        np.testing.assert_allclose(imu[slot], normed(row[None])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        loss.queue("text").numpy()[0], normed(second.teachers["text"][2:3])[0], rtol=1e-5, atol=1e-6
    )
    # a batch larger than the queue keeps its last rows
    big = nn_batch(7, 3)
    loss(big)
    assert int(loss.queue_ptr) == 1 and int(loss.queue_count) == 5
    np.testing.assert_allclose(
        loss.queue("imu").numpy()[1], normed(big.imu["ssl"][2:3])[0], rtol=1e-5, atol=1e-6
    )
    # evaluation mode looks up but never writes
    before = loss.queue("imu").clone()
    loss.eval()
    loss(nn_batch(2, 4))
    assert torch.equal(loss.queue("imu"), before) and int(loss.queue_ptr) == 1


def test_nn_lookup_by_video_then_text_and_loss_by_hand():
    loss = primus_core.create("loss", "nn", queue_size=4, ssl_coeff=0.5)
    # fill the queue with 4 windows whose embeddings are the unit axes; slot 3 has no video
    eye = torch.eye(4)
    fill = StepBatch(
        imu={"emb": eye, "ssl": eye.flip(0), "mmcl": eye},
        teachers={"text": eye.roll(1, dims=1), "video": eye},
        teacher_mask={
            "text": torch.ones(4, dtype=torch.bool),
            "video": torch.tensor([True, True, True, False]),
        },
    )
    loss(fill)
    # queue: video slot i = e_i (slots 0-2), text slot i = e_{i+1 mod 4}, imu slot i = e_{3-i}
    video = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0, 0, 0, 0.0]])
    text = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.2, 0.0, 0.0]])
    batch = StepBatch(
        imu=outputs(3, 60),
        teachers={"text": text, "video": video},
        teacher_mask={
            "text": torch.tensor([False, True, True]),
            "video": torch.tensor([True, True, False]),
        },
    )
    index, found = loss.lookup(batch)
    # row 0: video ~ e1 -> slot 1. row 1: video e3 but slot 3 has no video; among slots 0-2 all
    # tie at 0 -> slot 0. row 2: no video, text ~ e0 -> text slot 3 (text of slot 3 is e0).
    assert found.tolist() == [True, True, True]
    assert index.tolist() == [1, 0, 3]
    total, terms = loss(batch)
    has_video = np.array([True, True, True, False])[[1, 0, 3]]
    q_video, q_text = eye.numpy()[[1, 0, 3]], eye.roll(1, dims=1).numpy()[[1, 0, 3]]
    # slot 3's stored video row (e3; its window had no video) stays in the softmax as a negative
    q_imu = eye.flip(0).numpy()[[1, 0, 3]]
    mmcl, ssl = batch.imu["mmcl"].numpy(), batch.imu["ssl"].numpy()
    v = np_reference_infonce(mmcl, q_video, mask=has_video)
    t = np_reference_infonce(mmcl, q_text)
    s = np_reference_infonce(ssl, q_imu)
    assert num(terms["video"]) == pytest.approx(v, rel=1e-5)
    assert num(terms["text"]) == pytest.approx(t, rel=1e-5)
    assert num(terms["imu"]) == pytest.approx(s, rel=1e-5)
    assert num(total) == pytest.approx(0.5 * (v + t) + 0.5 * s, rel=1e-5)


def test_nn_text_only_recipe_and_rows_without_any_teacher():
    loss = primus_core.create("loss", "nn", queue_size=8, modalities=["text"])
    loss(nn_batch(4, 5))
    none = torch.zeros(3, dtype=torch.bool)
    batch = nn_batch(3, 6, text_mask=torch.tensor([True, False, True]), video_mask=none)
    index, found = loss.lookup(batch)
    assert found.tolist() == [True, False, True]
    _, terms = loss(batch)
    assert set(terms) == {"text", "imu", "found"}


def test_nn_queue_survives_a_checkpoint_round_trip():
    loss = primus_core.create("loss", "nn", queue_size=6)
    for seed in range(3):
        loss(nn_batch(4, seed))
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {
        "queue_text",
        "queue_video",
        "queue_imu",
        "has_video",
        "queue_ptr",
        "queue_count",
    } <= set(state)
    fresh = primus_core.create("loss", "nn", queue_size=6)
    fresh.load_state_dict(state)
    for name, value in loss.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    probe = nn_batch(4, 9)
    loss.eval()
    fresh.eval()
    assert num(fresh(probe)[0]) == pytest.approx(num(loss(probe)[0]), rel=1e-6)


# ---------------------------------------------------------------- nn under torch.distributed
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        loss = primus_core.create("loss", "nn", queue_size=16)
        loss(nn_batch(2, 10 * rank))  # gathered=False: the loss all-gathers
        results[rank] = (int(loss.queue_count), loss.queue("imu")[:4].clone())
        gathered = primus_core.create("loss", "nn", queue_size=16)
        batch = nn_batch(2, 0)
        batch.gathered = True  # the trainer already gathered: no second gather
        gathered(batch)
        results[rank + world] = int(gathered.queue_count)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_nn_queue_receives_every_rank_under_ddp():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    expected = np.concatenate(
        [normed(nn_batch(2, 0).imu["ssl"]), normed(nn_batch(2, 10).imu["ssl"])]
    )
    for rank in (0, 1):
        count, imu = results[rank]
        assert count == 4
        np.testing.assert_allclose(imu.numpy(), expected, rtol=1e-5, atol=1e-6)
        assert results[rank + 2] == 2


def test_hook_register_losses_registers_every_objective():
    from primus_core.components import list_components

    losses = {c.name: c for c in list_components("loss")}
    assert {"infonce", "ss", "mm", "nn", "supervised"} <= set(losses)
    assert all(
        losses[n].plugin == "objectives" for n in ("infonce", "ss", "mm", "nn", "supervised")
    )
    declared = {}
    for name, params in [("ss", {}), ("mm", {}), ("nn", {}), ("supervised", {"num_classes": 3})]:
        loss = primus_core.create("loss", name, **params)
        declared[name] = (loss.modalities, loss.needs_augmented_view, loss.needs_labels)
    assert declared == {
        "ss": ((), True, False),
        "mm": (("text", "video"), False, False),
        "nn": (("text", "video"), False, False),
        "supervised": ((), False, True),
    }
