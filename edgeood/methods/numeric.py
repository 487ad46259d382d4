"""NumPy building blocks of the reference implementations (float64, max-shifted)."""
from __future__ import annotations

import numpy as np


def logsumexp(v: np.ndarray, axis: int = 1) -> np.ndarray:
    v = np.asarray(v, np.float64)
    m = v.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(v - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def softmax(v: np.ndarray, axis: int = 1) -> np.ndarray:
    v = np.asarray(v, np.float64)
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def linear(z: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return np.asarray(z, np.float64) @ np.asarray(weight, np.float64).T + bias


def k_from_percentile(d: int, percentile: float) -> int:
    """k = D - round(D * p / 100), round-half-to-even (NumPy's round, as the graph's Round)."""
    return int(d - np.round(d * percentile / 100.0))
