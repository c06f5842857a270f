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


def test_mixed_effects_has_crossed_seed_repeat_and_corpus_components():
    cells = grid_cells(0.02, 0.01, repeats=2)
    me = mixed_effects(cells)
    assert set(me["variance_components"]) == {"seed", "repeat", "corpus"}
    # the planted seed effect (shared by every corpus) is what the seed component measures
    seed_effect = np.random.default_rng(0).normal(0, 0.03, 4)
    assert me["variance_components"]["seed"] == pytest.approx(np.var(seed_effect, ddof=1), rel=0.3)
    assert me["residual_variance"] == pytest.approx(0.01**2, rel=0.5)
    one = mixed_effects([c for c in cells if c["repeat"] == 0])
    assert set(one["variance_components"]) == {"seed", "corpus"}  # one repeat: no repeat term


def test_power_formula_and_repeats_for_1_point_at_this_many_seeds():
    import math

    cells = grid_cells(0.02, 0.01, seeds=3, noise=0.02)
    got = power_summary(cells)
    diffs = per_sample_differences(cells)
    assert got["samples"] == len(diffs) == 9  # 3 repeats x 3 seeds
    sd = np.std(diffs, ddof=1)
    assert got["sd_per_sample"] == pytest.approx(sd)
    z = 0.01 / (sd / math.sqrt(9)) - 1.96
    assert got["power_1_point"] == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))))
    need = math.ceil(((1.96 + 0.84) * sd / 0.01) ** 2)
    assert got["samples_for_1_point"] == need
    assert got["repeats_for_1_point"] == math.ceil(need / 3)


def test_spread_sample_is_seeded_and_capped_at_2000_by_default():
    import inspect

    from primus_core.evaluation.diversity import corpus_spread

    assert inspect.signature(spread_of_texts).parameters["max_texts"].default == 2000
    assert inspect.signature(corpus_spread).parameters["max_texts"].default == 2000
    rng = np.random.default_rng(0)
    vectors = {f"text {i}": rng.normal(size=8) for i in range(40)}
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return np.array([vectors[t] for t in texts])

    texts = [f"text {i}" for i in range(40)] * 2
    a = spread_of_texts(texts, embed, max_texts=10, seed=1)
    b = spread_of_texts(texts, embed, max_texts=10, seed=1)
    c = spread_of_texts(texts, embed, max_texts=10, seed=2)
    assert seen[0] == seen[1] != seen[2] and len(seen[0]) == 10
    assert a == b and a["distinct_narrations"] == 40 and a["narrations"] == 80
    assert c["mean_cosine_distance"] != a["mean_cosine_distance"]
