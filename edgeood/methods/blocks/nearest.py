"""Block: exact nearest-neighbour search of rows against a bank, ||g||^2 - 2 g G^T + ||G||^2
(one Gemm and a ReduceMin in the graph), its NumPy reference, and the bank's reductions
(random rows, k-means). GROOD's bank search; any KNN-style score can use it."""
from __future__ import annotations

import numpy as np

CHUNK = 4096  # rows per NumPy product (memory)


# --- graph ------------------------------------------------------------------------------------
def sq_distances_graph(graph, x, points, points_sq):
    """[N, K] ||x_i - p_j||^2 = ||x||^2 - 2 x p^T + ||p||^2 (one Gemm), clamped at 0; points
    [K, D] and points_sq [1, K] (||p_j||^2) constants."""
    xx = graph.reduce("ReduceSumSquare", x, [1], keepdims=True)
    return graph.maximum(graph.add(graph.gemm(x, points, points_sq, trans_b=True,
                                              attrs={"alpha": -2.0}), xx), np.float32(0))


def nearest_sq_distance_graph(graph, g, bank, bank_sq_norms):
    """[N] min_i ||g - G_i||^2, exact: ||g||^2 + min_i (||G_i||^2 - 2 g G_i); bank [B, D] and
    bank_sq_norms [1, B] constants (not clamped: the reference is not either)."""
    gg = graph.reduce("ReduceSumSquare", g, [1], keepdims=False)
    cross = graph.gemm(g, bank, bank_sq_norms, trans_b=True, attrs={"alpha": -2.0})
    return graph.add(gg, graph.reduce("ReduceMin", cross, [1], keepdims=False))


def sq_norms(bank: np.ndarray) -> np.ndarray:
    """[1, B] float32 ||G_i||^2, summed in float64: the bank_sq_norms constant."""
    b64 = np.asarray(bank, np.float64)
    return (b64 * b64).sum(1).astype(np.float32).reshape(1, -1)


# --- NumPy (float64) --------------------------------------------------------------------------
def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 for all pairs, as ||a||^2 - 2 a b^T + ||b||^2 clamped at 0 (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def nearest_sq_distance(g: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """min_i ||g - G_i||^2 per row (exact; chunked over rows)."""
    g, bank = np.asarray(g, np.float64), np.asarray(bank, np.float64)
    gg, bb = (g * g).sum(1), (bank * bank).sum(1)
    out = np.empty(len(g))
    for s in range(0, len(g), CHUNK):
        out[s:s + CHUNK] = gg[s:s + CHUNK] + (bb[None, :] - 2.0 * g[s:s + CHUNK] @ bank.T).min(1)
    return out


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    cc = (centres * centres).sum(1)
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), CHUNK):
        out[s:s + CHUNK] = (cc[None, :] - 2.0 * x[s:s + CHUNK] @ centres.T).argmin(1)
    return out


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 10) -> np.ndarray:
    """k centres of the rows of x: k-means++ start (seeded), then Lloyd iterations (empty
    clusters keep their centre); deterministic for a seed. float64."""
    x = np.asarray(x, np.float64)
    n = len(x)
    rng = np.random.default_rng(seed)
    idx = [int(rng.integers(n))]
    d2 = ((x - x[idx[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        nxt = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        idx.append(nxt)
        d2 = np.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    centres = x[idx].copy()
    for _ in range(iterations):
        assign = _assign(x, centres)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.array_equal(new, centres):
            break
        centres = new
    return centres


def reduce_bank(bank: np.ndarray, size: int, how: str, seed: int, iterations: int) -> np.ndarray:
    """The bank itself (size 0 or >= its rows), a seeded random subset of its rows (kept in
    order), or k-means centres."""
    if size <= 0 or size >= len(bank):
        return bank
    if how == "random":
        rows = np.sort(np.random.default_rng(seed).choice(len(bank), size, replace=False))
        return bank[rows]
    return kmeans(bank, size, seed, iterations)
