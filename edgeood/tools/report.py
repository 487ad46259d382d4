"""Plots of an evaluation (`edgeood eval --plot DIR`, `edgeood demo`): per detector, score
histograms (ID vs each OOD set, the stored threshold drawn; one panel per method) and ROC
curves; for several detectors of one model (float32 / float16 / int8) an overlay per precision
of the ID score distributions with each detector's threshold, and of the ROC curves.

matplotlib is optional (the `plot` extra; the demo extra includes it): without it plotting is a
one-line error naming the extra.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from edgeood.errors import EdgeoodError

COLS = 4


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeoodError("plots need matplotlib: pip install 'edgeood[plot]'") from None
    return plt


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) over every threshold, ID positive, higher score = ID."""
    s = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(y)[last], (last + 1) - np.cumsum(y)[last]
    return np.r_[0.0, fp / max(len(ood_scores), 1)], np.r_[0.0, tp / max(len(id_scores), 1)]


def _grid(plt, n: int, title: str):
    cols = min(COLS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return fig, axes.ravel()


def _bins(arrays: list[np.ndarray], n: int = 40) -> np.ndarray:
    v = np.concatenate([a[np.isfinite(a)] for a in arrays]).astype(np.float64)
    lo, hi = np.percentile(v, [0.5, 99.5]) if len(v) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n + 1)


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def set_colors(plt, scores: dict) -> dict[str, str]:
    """One colour per data set (ID first), the same in the histogram and the ROC figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[k % len(cycle)] for k, name in enumerate(scores)}


def histograms(scores: dict[str, dict[str, np.ndarray]], thresholds: dict[str, float],
               path: Path, title: str) -> Path:
    """scores: set name ('id' first) -> method -> scores. One panel per method."""
    plt = _pyplot()
    methods = list(scores["id"])
    fig, axes = _grid(plt, len(methods), title)
    color = set_colors(plt, scores)
    for ax, m in zip(axes, methods):
        bins = _bins([s[m] for s in scores.values()])
        for k, (name, s) in enumerate(scores.items()):
            ax.hist(np.clip(s[m], bins[0], bins[-1]), bins=bins, density=True,
                    histtype="stepfilled" if k == 0 else "step", alpha=0.45 if k == 0 else 0.9,
                    label="ID" if name == "id" else name, linewidth=1.4, color=color[name])
        if m in thresholds:
            ax.axvline(thresholds[m], color="black", linestyle="--", linewidth=1.2,
                       label="threshold")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("score (higher = ID)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    return _save(fig, plt, path)


def roc_curves(scores: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> Path:
    from edgeood.stats.metrics import auroc
    plt = _pyplot()
    methods = list(scores["id"])
    fig, axes = _grid(plt, len(methods), title)
    color = set_colors(plt, scores)
    for ax, m in zip(axes, methods):
        for name, s in scores.items():
            if name == "id":
                continue
            fpr, tpr = roc_points(scores["id"][m], s[m])
            ax.plot(fpr, tpr, label=f"{name} ({100 * auroc(scores['id'][m], s[m]):.1f})",
                    linewidth=1.4, color=color[name])
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("FPR (OOD accepted)", fontsize=8)
        ax.set_ylabel("TPR (ID accepted)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    return _save(fig, plt, path)


def precision_overlay(labels: list[str], scores: list[dict], thresholds: list[dict],
                      path: Path, title: str, ood: str | None = None) -> Path:
    """Per method: the ID score distribution of each detector (precision) with its own
    threshold, and (with ood) the ROC of each against that OOD set in an inset-free second
    row of panels."""
    plt = _pyplot()
    methods = [m for m in scores[0]["id"] if all(m in s["id"] for s in scores)]
    n = len(methods)
    cols = min(COLS, n)
    rows = math.ceil(n / cols) * (2 if ood else 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    for ax in flat:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        ax = flat[(i // cols) * (2 if ood else 1) * cols + i % cols]
        ax.set_visible(True)
        bins = _bins([s["id"][m] for s in scores] + ([s[ood][m] for s in scores] if ood else []))
        for k, (lab, s, thr) in enumerate(zip(labels, scores, thresholds)):
            c = colors[k % len(colors)]
            ax.hist(np.clip(s["id"][m], bins[0], bins[-1]), bins=bins, density=True,
                    histtype="step", color=c, linewidth=1.4, label=f"ID {lab}")
            if ood:
                ax.hist(np.clip(s[ood][m], bins[0], bins[-1]), bins=bins, density=True,
                        histtype="step", color=c, linewidth=0.9, linestyle=":")
            if m in thr:
                ax.axvline(thr[m], color=c, linestyle="--", linewidth=1.0)
        ax.set_title(f"{m}: ID (solid), {ood} (dotted)" if ood else m, fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
        if ood:
            rax = flat[((i // cols) * 2 + 1) * cols + i % cols]
            rax.set_visible(True)
            for k, (lab, s) in enumerate(zip(labels, scores)):
                fpr, tpr = roc_points(s["id"][m], s[ood][m])
                rax.plot(fpr, tpr, color=colors[k % len(colors)], linewidth=1.2, label=lab)
            rax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle=":")
            rax.set_title(f"{m}: ROC vs {ood}", fontsize=9)
            rax.tick_params(labelsize=7)
            rax.legend(fontsize=6, loc="lower right")
    return _save(fig, plt, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "set"


def write_plots(result: dict, out: str | Path, methods: list[str] | None = None) -> list[Path]:
    """PNGs for an evaluate_many(..., keep_scores=True) result: histograms and ROC curves of
    each detector, and with several detectors one precision overlay per OOD set (methods:
    only these panels)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    labels, reports, scores = result["detectors"], result["reports"], result["scores"]
    if methods:
        scores = [{k: {m: v[m] for m in methods if m in v} for k, v in s.items()}
                  for s in scores]
    for lab, rep, sc in zip(labels, reports, scores):
        tag = _slug(lab)
        written.append(histograms(sc, rep["thresholds"], out / f"histograms_{tag}.png",
                                  f"{Path(rep['detector']).name} ({lab}): scores, ID vs OOD"))
        written.append(roc_curves(sc, out / f"roc_{tag}.png",
                                  f"{Path(rep['detector']).name} ({lab}): ROC (AUROC %)"))
    if len(labels) > 1:
        oods = [k for k in scores[0] if k != "id"]
        for o in oods or [None]:
            name = f"precision_overlay_{_slug(o)}.png" if o else "precision_overlay.png"
            written.append(precision_overlay(labels, scores, [r["thresholds"] for r in reports],
                                             out / name, f"per precision: {', '.join(labels)}",
                                             o))
    return written
