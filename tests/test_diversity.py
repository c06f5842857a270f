"""Diversity measures and the verdict statistics (primus_core/diversity.py) on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from primus_core.evaluation.diversity import (
    compare_measures,
    mixed_effects,
    per_sample_differences,
    power_summary,
    samples_needed,
    spread_of_embeddings,
    spread_of_texts,
)


def test_spread_counts_orthogonal_narrations_and_weights_them():
    eye = np.eye(4)
    s = spread_of_embeddings(eye)
    assert s["effective_clusters"] == pytest.approx(4.0)
    assert s["mean_cosine_distance"] == pytest.approx(0.75)  # 1 - 1/4 (same text 1/4 of pairs)
    same = spread_of_embeddings(np.ones((3, 5)))
    assert same["effective_clusters"] == pytest.approx(1.0)
    assert same["mean_cosine_distance"] == pytest.approx(0.0, abs=1e-12)
    skewed = spread_of_embeddings(eye[:2], weights=[9, 1])
    assert 1.0 < skewed["effective_clusters"] < 2.0
    # two near-identical narrations count as about one cluster, a distant one as another
    near = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0]])
    assert 1.9 < spread_of_embeddings(near, [1, 1, 2])["effective_clusters"] < 2.1


def test_spread_of_texts_weights_by_window_counts_and_samples():
    vocab = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.7, 0.7]}
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([vocab[t] for t in texts])

    out = spread_of_texts(["a", "a", "a", "b", None, ""], embed)
    assert out["narrations"] == 4 and out["distinct_narrations"] == 2
    assert calls == [["a", "b"]]
    assert out["mean_cosine_distance"] == pytest.approx(1 - (0.75**2 + 0.25**2))
    out = spread_of_texts(["a", "b", "c"], embed, max_texts=2)
    assert len(calls[-1]) == 2 and out["distinct_narrations"] == 3
    assert spread_of_texts([None], embed) == {"narrations": 0, "distinct_narrations": 0}


def grid_cells(div_slope, size_slope, repeats=3, seeds=4, noise=0.01, seed=0, extra=None):
    rng = np.random.default_rng(seed)
    seed_effect = rng.normal(0, 0.03, seeds)  # shared by every corpus (paired)
    cells = []
    for r in range(repeats):
        for d in (2, 3, 4, 6, 8, 12):
            for n in (100, 400):
                base = 0.3 + div_slope * np.log2(d) + size_slope * np.log2(n)
                scores = {
                    s: float(base + seed_effect[s] + rng.normal(0, noise)) for s in range(seeds)
                }
                cells.append(
                    {
                        "model": f"d{d}-n{n}-r{r}",
                        "diversity": d,
                        "size": n,
                        "repeat": r,
                        "seed_scores": scores,
                        "measures": {"activities": d, "other": float(rng.uniform(1, 10))},
                    }
                )
    return cells


def test_mixed_effects_recovers_slopes_and_separates_them():
    cells = grid_cells(0.04, 0.0)
    me = mixed_effects(cells)
    assert me["per_doubling_diversity"]["estimate"] == pytest.approx(0.04, abs=0.005)
    assert me["difference"]["low"] > 0 and me["difference"]["p"] < 0.01
    null = mixed_effects(grid_cells(0.0, 0.0, seed=3))
    assert null["difference"]["low"] < 0 < null["difference"]["high"]


def test_power_shrinks_with_noise_and_measures_are_ranked():
    quiet = power_summary(grid_cells(0.02, 0.01, noise=0.002))
    loud = power_summary(grid_cells(0.02, 0.01, noise=0.05))
    assert quiet["samples"] == 12 == len(per_sample_differences(grid_cells(0.0, 0.0)))
    assert quiet["power_1_point"] > 0.99 > loud["power_1_point"]
    assert loud["samples_for_1_point"] > quiet["samples_for_1_point"]
    assert samples_needed(0.01, 0.01) == 8  # (1.96 + 0.84)^2
    cmp = compare_measures(
        grid_cells(0.04, 0.0, noise=0.005), ["activities", "other"], bootstrap=200
    )
    assert cmp["best"] == "activities"
    assert cmp["measures"]["activities"]["r2"] > cmp["measures"]["other"]["r2"]
    worse = cmp["measures"]["other"]["rmse_vs_activities"]
    assert 0 < worse["low"] < worse["estimate"] < worse["high"]  # "other" predicts worse
