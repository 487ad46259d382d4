"""OOD metrics with ID as the positive class (scores: higher = more ID).

AUROC (Mann-Whitney with average ranks for ties), FPR at a TPR (the fraction of OOD accepted at
the threshold that keeps `tpr` of ID), AUPR-in / AUPR-out (average precision, ties grouped),
and the false-alarm rate of a fixed threshold.
"""
from __future__ import annotations

import numpy as np


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), np.float64)
    sv = v[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sv)) + 1]
    ends = np.r_[starts[1:], len(v)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    a, b = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    r = _ranks(np.concatenate([a, b]))
    return float((r[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0) / (len(a) * len(b)))


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Smallest FPR over ROC points (thresholds at observed scores) whose TPR reaches tpr."""
    a, b = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    thresholds = np.unique(np.concatenate([a, b]))[::-1]
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    tp = len(a) - np.searchsorted(a_sorted, thresholds, side="left")
    fp = len(b) - np.searchsorted(b_sorted, thresholds, side="left")
    ok = tp / len(a) >= tpr
    return float((fp[ok] / len(b)).min())


def average_precision(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds, high score = positive."""
    s = np.concatenate([pos_scores, neg_scores]).astype(np.float64)
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / len(pos_scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(id_scores, ood_scores) -> float:
    return average_precision(np.asarray(id_scores), np.asarray(ood_scores))


def aupr_out(id_scores, ood_scores) -> float:
    return average_precision(-np.asarray(ood_scores, np.float64), -np.asarray(id_scores, np.float64))


def flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    """is_ood as the detector's graph computes it: not (score >= threshold), so a NaN score is
    OOD (fail-safe) instead of passing as in-distribution."""
    return ~(np.asarray(scores) >= threshold)


def false_alarm_rate(id_scores: np.ndarray, threshold: float) -> float:
    """Fraction of ID images flagged OOD (see flagged)."""
    return float(np.mean(flagged(id_scores, threshold)))


def summary(id_scores, ood_scores, tpr: float = 0.95) -> dict[str, float]:
    return {"auroc": auroc(id_scores, ood_scores), "fpr95": fpr_at_tpr(id_scores, ood_scores, tpr),
            "aupr_in": aupr_in(id_scores, ood_scores), "aupr_out": aupr_out(id_scores, ood_scores)}
