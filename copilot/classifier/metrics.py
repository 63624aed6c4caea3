"""Metrics used both by training (dev figures in the model card) and by the eval harness. Masked: a label that is not
annotated for a row is not scored for that row."""

from __future__ import annotations

import numpy as np


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean of precision at each positive (step-wise, no interpolation).
    NaN without positives, and without negatives too: a set of positives only (StrongREJECT's requests) scores 1.0
    under any ranking, which says nothing; recall at the threshold is the figure for such a set."""
    y = np.asarray(y, dtype=float)
    s = np.asarray(s, dtype=float)
    n_pos = y.sum()
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # Ties: treat a group of equal scores as one threshold (precision at the end of the group).
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def prf(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    tp = float((y & pred).sum())
    fp = float((~y & pred).sum())
    fn = float((y & ~pred).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """Threshold on s that maximises F1 (midpoint between neighbouring scores, so it transfers to unseen scores)."""
    y = np.asarray(y, dtype=bool)
    if y.sum() == 0:
        return 0.5
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    tp = np.cumsum(yy)
    fp = np.cumsum(~yy)
    f1 = 2 * tp / (tp + fp + y.sum())
    distinct = np.r_[np.where(np.diff(ss))[0], len(ss) - 1]
    i = distinct[np.argmax(f1[distinct])]
    nxt = ss[i + 1] if i + 1 < len(ss) else ss[i] - 1e-3
    return float(max(1e-4, (ss[i] + nxt) / 2))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of (bin share) * |mean(y) - mean(p)|."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)
