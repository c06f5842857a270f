"""Diversity measures and the statistics behind the diversity-vs-size verdict (docs/diversity.md).

Two definitions of a corpus's diversity:

- ``activities``: the number of distinct labels (activities, scenarios) in it;
- semantic spread of its narrations, from their text-teacher embeddings: ``mean_cosine_distance``
  (the expected cosine distance between the narrations of two windows drawn at random) and
  ``effective_clusters`` (the Vendi score: exp of the entropy of the eigenvalues of the
  frequency-weighted cosine-similarity matrix; k orthogonal narrations of equal frequency give k).

And the statistics: a mixed-effects fit of accuracy on log2(diversity) and log2(size) with crossed
random effects for evaluation seed and pretraining repeat (statsmodels MixedLM), the number of
seed x repeat samples a difference needs for 80 % power, and a comparison of how well each
diversity measure predicts transfer (leave-one-repeat-out error of a two-variable regression).
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Z_ALPHA = 1.959963984540054  # two-sided 5 %
Z_POWER = 0.8416212335729143  # 80 % power


# ---------------------------------------------------------------------------- semantic spread
def spread_of_embeddings(emb: np.ndarray, weights: Sequence[float] | None = None) -> dict:
    """Mean pairwise cosine distance and effective number of clusters (Vendi score) of rows of
    ``emb`` (one per distinct narration) weighted by ``weights`` (their window counts)."""
    x = np.asarray(emb, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("need a non-empty (N, D) array of embeddings")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    p = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    p = p / p.sum()
    k = x @ x.T
    mean_distance = float(1.0 - p @ k @ p)
    sq = np.sqrt(p)
    eig = np.linalg.eigvalsh(sq[:, None] * k * sq[None, :])
    eig = eig[eig > 1e-12]
    eig = eig / eig.sum()
    vendi = float(np.exp(-(eig * np.log(eig)).sum()))
    return {"mean_cosine_distance": max(mean_distance, 0.0), "effective_clusters": vendi}


def spread_of_texts(
    texts: Sequence[str | None],
    embed: Callable[[list[str]], np.ndarray],
    max_texts: int = 2000,
    seed: int = 0,
) -> dict:
    """The spread of a corpus's narrations: distinct texts weighted by their window counts (at
    most ``max_texts`` distinct ones, a seeded sample of them, when there are more)."""
    counts = Counter(t for t in texts if t)
    if not counts:
        return {"narrations": 0, "distinct_narrations": 0}
    distinct = sorted(counts)
    if len(distinct) > max_texts:
        rng = np.random.default_rng(seed)
        distinct = sorted(rng.choice(distinct, max_texts, replace=False).tolist())
    emb = np.asarray(embed(distinct), np.float64)
    out = spread_of_embeddings(emb, [counts[t] for t in distinct])
    return {"narrations": sum(counts.values()), "distinct_narrations": len(counts), **out}


# ---------------------------------------------------------------------------- samples
def long_table(cells: list[dict[str, Any]], key: str = "seed_scores") -> list[dict[str, Any]]:
    """One row per (corpus, evaluation seed): diversity, size, repeat, seed, accuracy."""
    return [
        {
            "diversity": c["diversity"],
            "size": c["size"],
            "repeat": c["repeat"],
            "seed": int(s),
            "accuracy": float(v),
        }
        for c in cells
        if c["diversity"] > 0
        for s, v in c.get(key, {}).items()
    ]


def per_sample_differences(cells: list[dict[str, Any]], key: str = "seed_scores") -> np.ndarray:
    """For every (repeat, seed) sample: the OLS slope difference (diversity - size) over the grid
    it scores. The spread of these is the noise one more sample averages away."""
    rows = long_table(cells, key)
    groups: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["repeat"], r["seed"]), []).append(r)
    diffs = []
    for members in groups.values():
        x = np.array(
            [[1.0, math.log2(m["diversity"]), math.log2(m["size"])] for m in members], np.float64
        )
        if np.linalg.matrix_rank(x) < 3:
            continue
        coef, *_ = np.linalg.lstsq(x, np.array([m["accuracy"] for m in members]), rcond=None)
        diffs.append(coef[1] - coef[2])
    return np.array(diffs)


def samples_needed(sd_per_sample: float, effect: float = 0.01) -> int:
    """Seed x repeat samples for a two-sided 5 % test to detect ``effect`` with 80 % power."""
    if sd_per_sample <= 0:
        return 1
    return max(2, math.ceil(((Z_ALPHA + Z_POWER) * sd_per_sample / effect) ** 2))


def power_summary(cells: list[dict[str, Any]], key: str = "seed_scores") -> dict[str, Any]:
    """The per-sample spread of the slope difference, the power this run had to detect a
    1-point difference, and the samples (and repeats at this many seeds) that would give 80 %."""
    diffs = per_sample_differences(cells, key)
    if len(diffs) < 2:
        return {"samples": int(len(diffs))}
    sd = float(diffs.std(ddof=1))
    se = sd / math.sqrt(len(diffs))
    power = normal_cdf(0.01 / se - Z_ALPHA) if se > 0 else 1.0
    seeds = len({r["seed"] for r in long_table(cells, key)})
    need = samples_needed(sd)
    return {
        "samples": int(len(diffs)),
        "sd_per_sample": sd,
        "power_1_point": power,
        "samples_for_1_point": need,
        "repeats_for_1_point": math.ceil(need / max(seeds, 1)),
    }


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


# ---------------------------------------------------------------------------- mixed effects
def mixed_effects(cells: list[dict[str, Any]], key: str = "seed_scores") -> dict[str, Any]:
    """accuracy ~ log2(diversity) + log2(size) + (1 | seed) + (1 | repeat) + (1 | corpus),
    fitted by REML (statsmodels MixedLM, crossed effects as variance components); the two
    slopes and their difference (points per doubling) with Wald 95 % intervals."""
    import pandas as pd
    import statsmodels.formula.api as smf

    rows = long_table(cells, key)
    if len({r["seed"] for r in rows}) < 2 or len(rows) < 6:
        return {"text": "too few samples for a mixed-effects fit"}
    df = pd.DataFrame(rows)
    df["ld"] = np.log2(df["diversity"])
    df["ln"] = np.log2(df["size"])
    df["corpus"] = [
        f"{d}-{n}-{r}" for d, n, r in zip(df.diversity, df["size"], df.repeat, strict=True)
    ]
    df["one"] = 1
    vc = {"seed": "0 + C(seed)", "corpus": "0 + C(corpus)"}
    if df["repeat"].nunique() > 1:
        vc["repeat"] = "0 + C(repeat)"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("accuracy ~ ld + ln", df, groups="one", vc_formula=vc).fit(reml=True)
    beta = fit.fe_params
    cov = fit.cov_params().loc[["ld", "ln"], ["ld", "ln"]].to_numpy()
    out: dict[str, Any] = {
        "model": "accuracy ~ log2 d + log2 n + (1|seed) + (1|repeat) + (1|corpus)"
    }
    for name, j in (("per_doubling_diversity", "ld"), ("per_doubling_size", "ln")):
        se = float(math.sqrt(fit.cov_params().loc[j, j]))
        out[name] = wald(float(beta[j]), se)
    diff_se = float(math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    out["difference"] = wald(float(beta["ld"] - beta["ln"]), diff_se)
    names = list(fit.model.exog_vc.names)
    out["variance_components"] = {
        n: float(v) for n, v in zip(names, np.atleast_1d(fit.vcomp), strict=True)
    }
    out["residual_variance"] = float(fit.scale)
    return out


def wald(estimate: float, se: float) -> dict[str, float]:
    p = 2 * (1 - normal_cdf(abs(estimate) / se)) if se > 0 else 0.0
    return {
        "estimate": estimate,
        "se": se,
        "low": estimate - Z_ALPHA * se,
        "high": estimate + Z_ALPHA * se,
        "p": p,
    }


# ---------------------------------------------------------------------------- which measure
def compare_measures(
    cells: list[dict[str, Any]],
    measures: Sequence[str],
    key: str = "seed_scores",
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """For each diversity measure m (a field of ``cell["measures"]``): the fit of
    accuracy ~ log(m) + log2(size) over corpora (accuracy averaged over seeds), its R² and its
    leave-one-repeat-out RMSE (the corpora of one repeat predicted from the others'); the best
    measure is the one with the lowest held-out error. Against the first measure (the number of
    activities), each other's RMSE difference gets a 95 % interval from a bootstrap over
    repeats of the held-out errors (negative: predicts better than the first)."""
    grid = [c for c in cells if c["diversity"] > 0 and c.get(key)]
    y = np.array([np.mean(list(c[key].values())) for c in grid])
    repeats = np.array([c["repeat"] for c in grid])
    out: dict[str, Any] = {"corpora": len(grid), "measures": {}}
    held: dict[str, np.ndarray] = {}
    for m in measures:
        values = np.array([float(c["measures"][m]) for c in grid])
        if (values <= 0).any():
            continue
        x = np.column_stack(
            [np.ones(len(grid)), np.log2(values), np.log2([c["size"] for c in grid])]
        )
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ coef
        r2 = 1 - float(resid @ resid) / max(float(((y - y.mean()) ** 2).sum()), 1e-12)
        errors = np.full(len(grid), np.nan)
        for r in np.unique(repeats):
            train, test = repeats != r, repeats == r
            if np.linalg.matrix_rank(x[train]) < 3:
                continue
            c_r, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
            errors[test] = y[test] - x[test] @ c_r
        held[m] = errors
        errors = errors[np.isfinite(errors)]
        out["measures"][m] = {
            "slope_per_doubling": float(coef[1]),
            "r2": r2,
            "cv_rmse": float(np.sqrt(np.mean(np.square(errors)))) if len(errors) else None,
        }
    first = measures[0] if measures else None
    ids = np.unique(repeats)
    if first in held and np.isfinite(held[first]).any() and len(ids) > 1:
        rng = np.random.default_rng(seed)
        picks = [rng.choice(ids, len(ids)) for _ in range(bootstrap)]
        rows = [np.concatenate([np.flatnonzero(repeats == r) for r in pick]) for pick in picks]

        def rmse(e: np.ndarray) -> float:
            e = e[np.isfinite(e)]
            return float(np.sqrt(np.mean(np.square(e)))) if len(e) else float("nan")

        for m, errors in held.items():
            if m == first:
                continue
            draws = np.array([rmse(errors[i]) - rmse(held[first][i]) for i in rows])
            lo, hi = np.nanpercentile(draws, [2.5, 97.5])
            out["measures"][m]["rmse_vs_" + first] = {
                "estimate": rmse(errors) - rmse(held[first]),
                "low": float(lo),
                "high": float(hi),
            }
    ranked = [(v["cv_rmse"], m) for m, v in out["measures"].items() if v["cv_rmse"] is not None]
    if ranked:
        out["best"] = min(ranked)[1]
    return out


# ---------------------------------------------------------------------------- corpora
def corpus_spread(recipe_name: str, overrides: Sequence[str], max_texts: int = 2000) -> dict:
    """The semantic spread of the narrations of the corpus that ``recipe_name`` with
    ``overrides`` pretrains on, embedded by the recipe's text teacher (minilm-text when it has
    none) through the teacher-embedding cache."""
    from ..components import create
    from ..config import ComponentRef
    from ..data.cache import EmbeddingCache
    from ..registry.recipes import resolve_recipe
    from ..training.trainer import load_data

    recipe = resolve_recipe(recipe_name, list(overrides)).recipe
    contract = create("encoder", recipe.encoder.type, **recipe.encoder.params).imu_contract
    windows = load_data(recipe, contract)
    refs = [t for t in recipe.teachers if t.type.endswith("-text")]
    ref = refs[0] if refs else ComponentRef(type="minilm-text")
    teacher = text_teacher(json.dumps(ref.model_dump(), sort_keys=True, default=str))
    cache = EmbeddingCache(progress=False)

    def embed(texts: list[str]) -> np.ndarray:
        return cache.get_or_compute(teacher, texts, batch_size=256).numpy()

    out = spread_of_texts(windows.narrations or [], embed, max_texts)
    return {**out, "teacher": ref.type}


@functools.lru_cache(maxsize=4)
def text_teacher(ref_json: str):
    """A text teacher built once per process (the corpora of one experiment share it)."""
    from ..config import ComponentRef
    from ..registry.recipes import build_component

    return build_component("teacher", ComponentRef(**json.loads(ref_json)), "teachers.0")
