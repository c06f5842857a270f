"""The classical baseline: per-channel statistical features of a window + logistic regression.

Features of each channel (and of the acceleration and rotation-rate magnitudes when the window
has 6 channels): mean, std, min, max, the 10/25/50/75/90th percentiles, energy (mean square),
mean absolute first difference and std of the first difference - 12 per channel, 96 for 6-axis
IMU windows. Standardised, then sklearn's multinomial logistic regression (L2, C=0.5).
"""

from __future__ import annotations

import warnings

import numpy as np

PERCENTILES = (10, 25, 50, 75, 90)
FEATURE_NAMES = (
    "mean",
    "std",
    "min",
    "max",
    *(f"p{p}" for p in PERCENTILES),
    "energy",
    "mean_abs_diff",
    "diff_std",
)


def with_magnitudes(imu: np.ndarray) -> np.ndarray:
    """(N, 6, T) -> (N, 8, T): the acc and gyro vector norms appended (orientation-free)."""
    x = np.asarray(imu, np.float64)
    if x.shape[1] != 6:
        return x
    norms = [np.linalg.norm(x[:, 0:3], axis=1), np.linalg.norm(x[:, 3:6], axis=1)]
    return np.concatenate([x, np.stack(norms, axis=1)], axis=1)


def window_features(imu: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(N, C, T) windows -> (N, F) float64 statistical features (see the module docstring)."""
    imu = np.asarray(imu)
    parts = [_features(with_magnitudes(imu[i : i + chunk])) for i in range(0, len(imu), chunk)]
    if not parts:
        width = imu.shape[1] + (2 if imu.shape[1] == 6 else 0)
        return np.zeros((0, len(FEATURE_NAMES) * width))
    return np.concatenate(parts)


def _features(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    diff = np.diff(x, axis=2)
    pct = np.percentile(x, PERCENTILES, axis=2).transpose(1, 2, 0).reshape(n, -1)
    blocks = [
        x.mean(2),
        x.std(2),
        x.min(2),
        x.max(2),
        pct,
        (x**2).mean(2),
        np.abs(diff).mean(2),
        diff.std(2),
    ]
    return np.concatenate(blocks, axis=1)


def fit_logreg(features: np.ndarray, labels: np.ndarray, C: float = 0.5, seed: int = 0):
    """A standardise + logistic-regression pipeline fitted on the features (one class: constant)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if np.unique(labels).size < 2:
        return DummyClassifier(strategy="most_frequent").fit(features, labels)
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(features, labels)
