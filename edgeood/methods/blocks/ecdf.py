"""Block: a score's position in a sorted reference sample, the right-continuous ECDF
F(v) = #{r <= v} / n, in the graph as the count n (1 - F(v)) = #{r > v} (Less + ReduceSum
against the sorted [1, n] constant). AdaSCALE's percentile lookup."""
from __future__ import annotations

import numpy as np


def sorted_reference(values: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """[1, n] float32, sorted: the values, or a seeded random `limit` of them when more."""
    v = np.asarray(values)
    if len(v) > limit:
        v = np.random.default_rng(seed).choice(v, limit, replace=False)
    return np.sort(v).astype(np.float32).reshape(1, -1)


def count_above_graph(graph, values, reference):
    """[N, 1] float32 #{r_j > v_i}: values an N-vector, reference the [1, n] constant."""
    return graph.count_above(values, reference, keepdims=True)


def ecdf(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """NumPy: F(v) = #{r <= v} / n, v rounded to float32 first (as the graph holds it)."""
    ref = np.asarray(reference, np.float64).ravel()
    v = np.asarray(values).astype(np.float32).astype(np.float64)
    return np.searchsorted(ref, v, side="right") / len(ref)
