"""Block: exact in-graph bin counts of rows of values (WeiPer+KLD's histograms), several rows
at once.

Each row of values ([N, length]) is counted over its own float32 edges e_0 <= ... <= e_n, bins
[e_i, e_i+1), values outside [e_0, e_n) and NaN dropped, in one of two forms:
- scatter (opset >= 16): every value gets its bin from the uniform-spacing estimate, corrected
  by one GatherElements of the edges (`bin_estimator` proves the correction exact at build
  time), and ONE ScatterElements(reduction="add") counts the values of every scatter row at
  once: the rows are concatenated and each row's bin indices offset into its own columns.
  O(M). Raw columns per row: n + 2 (below e_0 or NaN, the n bins, at or above e_n).
- compare: the number of values below each edge (Less + ReduceSum over [N, E, M]), which every
  TensorRT parser builds without plugins. O(M E). Raw columns per row: n + 1.
Either way a row's bin counts are its raw columns times a small integer matrix (`raw_to_bins`),
so a consumer folds that mapping (and any linear smoothing) into one matrix product of its
own. The raw counts and every partial sum of such a product are integers, at most
2 s (M + 1) for a kernel of s bins over M values (8 M for s = 40, M = 100000): below 2^24,
any summation order, on any backend, gives them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeood.graph.ops import constant

SCATTER_MIN_VALUES = 1024   # auto: rows of fewer values keep compare-and-count (cheap there)
SCATTER_MARGIN = 0.25       # bins of slack bin_estimator leaves to other backends' arithmetic


@dataclass
class Row:
    """One histogram: values v [N, length] counted over `edges` in `form`; `name` names the
    edges constant (so that it can be found in the graph)."""
    v: object
    edges: np.ndarray
    length: int
    form: str
    name: str | None = None

    @property
    def n(self) -> int:
        return len(self.edges) - 1

    @property
    def raw_width(self) -> int:
        return self.n + 2 if self.form == "scatter" else self.n + 1


def bin_estimator(edges: np.ndarray, margin: float = SCATTER_MARGIN, offset: int = 0):
    """(c, s), float32, such that for every float32 v the in-graph estimate
    k = trunc(clamp(fl(fl(v - c) * s), o, o + n)) is o + j - 1 or o + j, j = #{edges <= v},
    o = offset (so that k + [v >= e_k] = o + j: the offset places the row's bins after other
    rows' in one scatter, at no cost: it is folded into c); None where the edges are too far
    from uniform for that (then the histogram keeps compare-and-count).

    u = fl(fl(v - c) * s) and j are both non-decreasing in v, so on each interval where j is
    constant, [e_a, e_b), u is smallest at e_a and largest at the float32 below e_b: checking u
    at every edge and at its float32 predecessor checks every float32 v. Required there, with
    `margin` bins to spare: u >= o + j - 1 + margin (not for j = 0: clamped to o) and
    u < o + j + 1 - margin (not for j = n + 1: clamped to o + n)."""
    e = np.asarray(edges, np.float32).ravel()
    n = len(e) - 1
    if n < 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) < 0):
        return None
    width = (float(e[-1]) - float(e[0])) / n
    if not width > 0 or not np.isfinite(1.0 / width):
        return None
    s = np.float32(1.0 / width)
    c = np.float32(float(e[0]) - (0.5 + offset) * width)
    pts = np.concatenate([e, np.nextafter(e, np.float32(-np.inf))])
    with np.errstate(over="ignore", invalid="ignore"):
        u = (pts - c) * s  # float32 arithmetic, as the graph's Sub and Mul
    j = np.searchsorted(e, pts, side="right") + offset
    ok = np.isfinite(u) & ((j == offset) | (u >= j - 1 + margin)) & \
        ((j == offset + n + 1) | (u < j + 1 - margin))
    return (c, s) if bool(ok.all()) else None


def histogram_form(edges: np.ndarray, length: int, opset: int, requested: str = "auto") -> str:
    """'scatter' or 'compare': how the graph counts a row of `length` values against edges."""
    if requested == "compare" or opset < 16:
        return "compare"
    if requested == "auto" and length < SCATTER_MIN_VALUES:
        return "compare"
    return "scatter" if bin_estimator(edges) is not None else "compare"


def edges_constant(graph, edges: np.ndarray, form: str, name: str | None):
    """The edges as the constant `name`, shaped for `form`: [1, E, 1] (compare), [1, E]."""
    edges = np.asarray(edges, np.float32).ravel()
    return constant(graph, edges.reshape((1, -1, 1) if form == "compare" else (1, -1)), name)


def raw_to_bins(row: Row) -> np.ndarray:
    """The integer matrix A ([raw_width, n]) with bin counts = raw columns @ A."""
    n = row.n
    a = np.zeros((row.raw_width, n), np.int64)
    bins = np.arange(n)
    a[bins + 1, bins] = 1
    if row.form == "compare":   # counts below e_i+1 minus counts below e_i
        a[bins, bins] = -1
    return a


def _offsets(rows: list[Row]) -> list[int]:
    """The first raw column of each row, the rows' columns side by side in order."""
    return [int(o) for o in np.cumsum([0] + [r.raw_width for r in rows])[:-1]]


def settle_forms(rows: list[Row]) -> list[Row]:
    """The rows, each scatter row whose bin estimate does not hold at its column offset in the
    shared scatter (bin_estimator with offset) moved to compare-and-count. The offset, folded
    into c, moves u by far less than the margin, so this guards, it does not tune."""
    while True:
        scatter = [r for r in rows if r.form == "scatter"]
        bad = [r for r, o in zip(scatter, _offsets(scatter))
               if bin_estimator(r.edges, offset=o) is None]
        if not bad:
            return rows
        bad[0].form = "compare"


def graph_raw_counts(graph, rows: list[Row], scatter_base: int = 0):
    """(raw [N, K] float32, start column of each row, base of each row): the raw count columns
    of every row (forms settled by settle_forms), the scatter rows first, counted by one
    ScatterElements. A row's columns hold its raw counts plus its base: scatter_base=1 starts
    the scatter from the ones the updates are (one node less than zeros) where the scatter rows
    hold at least K values; 0 otherwise (and always for compare rows)."""
    scatter = [r for r in rows if r.form == "scatter"]
    compare = [r for r in rows if r.form == "compare"]
    base = scatter_base if sum(r.length for r in scatter) >= sum(r.raw_width for r in scatter) \
        else 0
    pieces = [_scatter_counts(graph, scatter, base)] if scatter else []
    for r in compare:
        below = graph.cast(graph.less(graph.unsqueeze(r.v, [1]),
                                      edges_constant(graph, r.edges, "compare", r.name)))
        # [N, E, M]: a contiguous reduction over the values (the [N, M, E] orientation
        # reduces over a strided axis and measured several times slower)
        pieces.append(graph.reduce("ReduceSum", below, [2]))
    raw = pieces[0] if len(pieces) == 1 else graph.concat(pieces, axis=1)
    start = {id(r): o for r, o in zip(scatter + compare, _offsets(scatter + compare))}
    return raw, [start[id(r)] for r in rows], [base if r.form == "scatter" else 0 for r in rows]


def _per_value(rows: list[Row], values, dtype):
    """One value per row as a scalar, or (rows differ) repeated over each row's values."""
    values = [np.asarray(v, dtype) for v in values]
    if all(v == values[0] for v in values):
        return values[0]
    return np.concatenate([np.full(r.length, v, dtype) for r, v in zip(rows, values)])[None]


def _scatter_counts(graph, rows: list[Row], base: int):
    """The raw columns of the scatter rows: j = k + [e_k <= v] per value (0 below e_0 and for
    NaN, i + 1 in bin i, n + 1 at or above e_n), offset by the row's first column (folded
    into each row's c and clamps), counted into [N, K] by one ScatterElements."""
    offsets = _offsets(rows)
    est = [bin_estimator(r.edges, offset=o) for r, o in zip(rows, offsets)]
    if any(e is None for e in est):
        raise ValueError("scatter form needs edges that bin_estimator accepts")
    v = rows[0].v if len(rows) == 1 else graph.concat([r.v for r in rows], axis=1)
    length = sum(r.length for r in rows)
    u = graph.mul(graph.sub(v, _per_value(rows, [e[0] for e in est], np.float32)),
                  _per_value(rows, [e[1] for e in est], np.float32))
    lo = _per_value(rows, offsets, np.float32)
    u = graph.where(graph.greater(u, lo), u, lo)                         # NaN, -inf -> o
    # int32 indices (widths are far below 2^31): half the bytes of int64 through the Cast,
    # the Add, the gather and the scatter, and TensorRT's own index type
    k = graph.cast(graph.minimum(u, _per_value(rows, [o + r.n for r, o in zip(rows, offsets)],
                                               np.float32)), np.int32)   # +inf -> o + n; trunc
    if len(rows) > 1:
        # each row's edges from its first column on, padded to its raw width (never read)
        parts = [edges_constant(graph, r.edges, "scatter", r.name) for r in rows]
        pads = [np.asarray(r.edges[-1:], np.float32).reshape(1, 1) for r in rows]
        e = graph.concat([t for pair in zip(parts, pads) for t in pair], axis=1)
    else:
        e = edges_constant(graph, rows[0].edges, "scatter", rows[0].name)
    # GatherElements over one row of edges (ORT's is ~10x faster per index than Gather's)
    ek = graph.reshape(graph.gather_elements(e, graph.reshape(k, [1, -1]), axis=1), [-1, length])
    j = graph.add(k, graph.cast(graph.less_equal(ek, v), np.int32))    # NaN: e_k <= v false
    j.dtype = np.int32
    ones = graph.fill_like(v, 1.0)
    width = sum(r.raw_width for r in rows)
    if base == 1:   # the ones cut to [N, K]: the counts start from one
        data = graph.slice_(ones, 0, width, axis=1)
    elif length >= width:  # the [N, K] zeros cut from the ones: 2 nodes, no shape arithmetic
        data = graph.mul(graph.slice_(ones, 0, width, axis=1), np.float32(0))
    else:
        n_rows = graph.slice_(graph.shape(v), 0, 1, axis=0)
        data = graph.fill(graph.concat([n_rows, np.asarray([width], np.int64)], axis=0), 0.0)
    return graph.scatter_elements(data, j, ones, axis=1, reduction="add")


def graph_bin_counts(graph, v, edges: np.ndarray, length: int, form: str, name=None):
    """[N, n] float32 counts of each row of v ([N, length]) over [e_i, e_i+1), values outside
    [e_0, e_n) (and NaN) dropped: exactly np.diff of the counts below each edge."""
    row = Row(v, np.asarray(edges, np.float32).ravel(), length, form, name)
    raw, _, _ = graph_raw_counts(graph, settle_forms([row]))
    return graph.matmul(raw, constant(graph, raw_to_bins(row)))


def histograms(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """NumPy: per-row histograms over [e_j, e_j+1), outside values dropped, divided by the row
    length."""
    v = np.asarray(values, np.float32)
    below = np.stack([(v < e).sum(axis=1) for e in edges], axis=1)
    return np.diff(below, axis=1) / v.shape[1]
