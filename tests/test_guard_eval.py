"""Evaluation probes on hand-built features with a known answer: the linear probe must learn
(it starts from a head that gets every window wrong), kNN must vote for the most similar
neighbours weighted by similarity, and the metrics follow their textbook formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primus_core.evaluation.protocol import (
    EvalSettings,
    batch_indices,
    fit_head,
    knn_predict,
    metrics,
    training_steps,
    warmup_cosine,
)


def separable(per_class: int = 6, dim: int = 8, seed: int = 0):
    """Three classes on three orthogonal axes, with a little noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(per_class)
    features = torch.eye(dim)[labels] + 0.05 * torch.randn(len(labels), dim, generator=gen)
    return features, labels


def test_linear_probe_learns_from_a_head_that_starts_all_wrong():
    features, labels = separable()
    wrong = torch.eye(8)[[1, 2, 0]]  # class c's row points at class c+1's axis
    start = (features @ wrong.T).argmax(1)
    assert int((start == labels).sum()) == 0  # zero-shot from this start: every window wrong
    s = EvalSettings(dataset="toy", lr=2e-2, min_steps=300)
    head = fit_head(features, labels, 3, wrong.clone(), s, seed=0, device=torch.device("cpu"))
    with torch.no_grad():
        predicted = head(features).argmax(1)
    assert torch.equal(predicted, labels)
    # held-out points of the same classes are classified by the learned head too
    test_f, test_y = separable(seed=1)
    with torch.no_grad():
        assert torch.equal(head(test_f).argmax(1), test_y)


def test_linear_probe_with_zero_epochs_keeps_its_start():
    features, labels = separable()
    init = torch.eye(8)[[1, 2, 0]]
    s = EvalSettings(dataset="toy", epochs=0)
    head = fit_head(features, labels, 3, init.clone(), s, seed=0, device=torch.device("cpu"))
    assert torch.equal(head.linear.weight.detach(), init)


def test_knn_votes_for_the_most_similar_neighbours():
    train_f = torch.tensor(
        [
            [1.0, 0.0],  # class 0, the test point's nearest
            [0.9, 0.1],  # class 0
            [0.0, 1.0],  # class 1, far
            [-1.0, 0.0],  # class 2, opposite
            [-0.9, -0.1],  # class 2, opposite
        ]
    )
    train_y = np.array([0, 0, 1, 2, 2])
    test_f = torch.tensor([[1.0, 0.05], [-1.0, 0.02], [0.05, 1.0]])
    assert knn_predict(train_f, train_y, test_f, k=2, classes=3).tolist() == [0, 2, 1]
    # k=3: the third neighbour of the first point is class 1 at similarity ~0.05: still class 0
    assert knn_predict(train_f, train_y, test_f, k=3, classes=3)[0] == 0
    # k larger than the training set is clamped
    assert knn_predict(train_f, train_y, test_f[:1], k=50, classes=3).tolist() == [0]


def test_knn_weights_votes_by_similarity_not_by_count():
    # k=3: one class-0 neighbour at similarity 1.0 outweighs two class-1 neighbours at ~0.26
    angle = np.deg2rad(75)
    train_f = torch.tensor(
        [[1.0, 0.0], [np.cos(angle), np.sin(angle)], [np.cos(angle), -np.sin(angle)]],
        dtype=torch.float32,
    )
    train_y = np.array([0, 1, 1])
    assert knn_predict(train_f, train_y, torch.tensor([[1.0, 0.0]]), k=3, classes=2)[0] == 0
    # counts would say class 1; with a closer class-1 pair the weighted vote says class 1
    angle = np.deg2rad(30)
    train_f[1:] = torch.tensor(
        [[np.cos(angle), np.sin(angle)], [np.cos(angle), -np.sin(angle)]], dtype=torch.float32
    )
    assert knn_predict(train_f, train_y, torch.tensor([[1.0, 0.0]]), k=3, classes=2)[0] == 1


def test_knn_breaks_an_exact_tie_towards_the_nearest():
    # two neighbours, classes 1 and 0, with similarities 1.0 and 0.0 once the third is dropped:
    # class 1 (nearest) wins a tie of summed similarity with classes 0 and 2 both at 0.5
    train_f = torch.tensor([[1.0, 0.0], [0.5, 0.75**0.5], [0.5, -(0.75**0.5)]])
    train_y = np.array([1, 0, 2])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train_f, train_y, test, k=1, classes=3)[0] == 1
    # class 0 with two votes at 0.5 each ties class 1's single 1.0 vote: the nearest wins
    train_y = np.array([1, 0, 0])
    assert knn_predict(train_f, train_y, test, k=3, classes=3)[0] == 1


def test_metrics_match_their_formulas_on_an_unbalanced_case():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 1])
    got = metrics(y_true, y_pred)
    # per class: recall 3/4, 1/2, 0; F1 = 2tp/(support+predicted): 6/8, 2/5, 0
    assert got["accuracy"] == pytest.approx(4 / 7)
    assert got["mean_class_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    assert got["macro_f1"] == pytest.approx((6 / 8 + 2 / 5 + 0) / 3)


def test_training_steps_and_batches():
    s = EvalSettings(dataset="toy", epochs=3, batch_size=4, min_steps=5)
    assert training_steps(10, s) == 9  # 3 epochs x ceil(10/4)
    assert training_steps(2, s) == 5  # the floor
    assert training_steps(2, s, min_steps=0) == 3
    s0 = EvalSettings(dataset="toy", epochs=0, min_steps=5)
    assert training_steps(10, s0) == 0
    batches = list(batch_indices(10, 4, 5, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]
    # each pass over the data is a permutation: no index twice before all were seen
    assert sorted(torch.cat(batches[:2]).tolist()) == sorted(set(torch.cat(batches[:2]).tolist()))
    assert sorted(torch.cat(batches[2:4]).tolist()) == sorted(set(torch.cat(batches[2:4]).tolist()))
    small = list(batch_indices(3, 4, 2, torch.Generator().manual_seed(0)))
    assert all(sorted(b.tolist()) == [0, 1, 2] for b in small)


def scheduled_lrs(steps: int, warmup_fraction: float, taken: int) -> list[float]:
    """The learning-rate factor of warmup_cosine at each of the first ``taken`` steps (lr 1)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, steps=steps, warmup_fraction=warmup_fraction)
    lrs = []
    for _ in range(taken):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_cosine_factors():
    lrs = scheduled_lrs(10, 0.2, 10)  # 2 warm-up steps
    expected = [0.5, 1.0] + [0.5 * (1 + np.cos(np.pi * (i - 2) / 8)) for i in range(2, 10)]
    assert lrs == pytest.approx(expected)


def test_metrics_of_a_single_window():
    assert metrics(np.array([2]), np.array([2])) == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "mean_class_accuracy": 1.0,
    }


def test_warmup_of_a_short_schedule_is_one_step_at_full_rate():
    lrs = scheduled_lrs(10, 0.1, 3)  # 1 warm-up step
    assert lrs == pytest.approx([1.0, 1.0, 0.5 * (1 + np.cos(np.pi / 9))])


def test_a_head_from_random_depends_on_its_seed_only():
    features, labels = separable()
    s = EvalSettings(dataset="toy", lr=1e-2, min_steps=20, batch_size=4)
    heads = []
    for global_seed, seed in ((0, 7), (1, 7), (0, 8)):
        torch.manual_seed(global_seed)  # the global generator must not matter
        head = fit_head(features, labels, 3, None, s, seed=seed, device=torch.device("cpu"))
        heads.append(head.linear.weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_each_pass_over_the_data_covers_every_index_once():
    gen = torch.Generator().manual_seed(3)
    batches = list(batch_indices(8, 4, 6, gen))
    for first in (0, 2, 4):  # three passes of two batches
        assert sorted(torch.cat(batches[first : first + 2]).tolist()) == list(range(8))


def test_knn_is_cosine_nearest_neighbours_as_numpy_computes_them():
    rng = np.random.default_rng(5)
    scale = np.exp(rng.normal(size=(1, 5)) * 1.5)  # columns of very different scales
    train = rng.normal(size=(30, 5)) * scale * np.exp(rng.normal(size=(30, 1)))
    test = rng.normal(size=(20, 5)) * scale * np.exp(rng.normal(size=(20, 1)))
    labels = rng.integers(0, 4, size=30)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    nearest = labels[(unit(test) @ unit(train).T).argmax(1)]
    as_f32 = {"dtype": torch.float32}
    got = knn_predict(torch.tensor(train, **as_f32), labels, torch.tensor(test, **as_f32), 1, 4)
    assert got.tolist() == nearest.tolist()


def test_a_single_step_probe_still_steps():
    features, labels = separable()
    start = torch.eye(8)[[1, 2, 0]]
    s = EvalSettings(dataset="toy", lr=1e-1, epochs=1, min_steps=0, batch_size=256)
    assert training_steps(len(features), s) == 1
    head = fit_head(features, labels, 3, start.clone(), s, seed=0, device=torch.device("cpu"))
    assert not torch.equal(head.linear.weight.detach(), start)
