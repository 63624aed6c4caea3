"""Evaluation metrics over predictions: per label, micro/macro, flagged, calibration, citations, latency, bootstrap CIs.

A label is scored for a row only when the row annotates it: rows with labels null are excluded, and labels named in
source_labels.unknown_categories are masked for that row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from copilot.classifier.metrics import average_precision, expected_calibration_error, prf, roc_auc


def _r(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Reliability table: for each non-empty equal-width score bin, its row count, mean score and fraction positive.

    The same bins as expected_calibration_error, so ECE = sum(n / N * |frac_pos - mean_p|) over the table.
    """
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"bin": b, "n": int(m.sum()), "mean_p": _r(p[m].mean()), "frac_pos": _r(y[m].mean())})
    return out


def pr_curve(y: np.ndarray, s: np.ndarray, points: int = 50) -> list[tuple[float, float]]:
    order = np.argsort(-s)
    yy = y[order]
    tp = np.cumsum(yy)
    k = np.arange(1, len(yy) + 1)
    prec, rec = tp / k, tp / max(yy.sum(), 1)
    step = max(1, len(yy) // points)
    return [(float(rec[i]), float(prec[i])) for i in range(0, len(yy), step)]


def label_metrics(Y: np.ndarray, S: np.ndarray, P: np.ndarray, M: np.ndarray, labels: list[str], calibration: bool = True) -> dict[str, Any]:
    """Y gold 0/1, S scores, P predicted 0/1, M mask (1 = annotated); all (n, L).

    Each label gets ECE and, with calibration, its reliability table, both over the rows that annotate it.
    calibration=False skips the tables (bootstrap resamples and slices only need the summary figures).
    """
    per: dict[str, Any] = {}
    tp = fp = fn = 0.0
    for k, label in enumerate(labels):
        m = M[:, k] > 0
        y, s, pr = Y[m, k], S[m, k], P[m, k].astype(bool)
        p_, r_, f_ = prf(y, pr)
        per[label] = {"support": int(y.sum()), "n": int(m.sum()), "precision": _r(p_), "recall": _r(r_), "f1": _r(f_),
                      "auprc": _r(average_precision(y, s)), "roc_auc": _r(roc_auc(y, s)), "ece": _r(expected_calibration_error(y, s))}
        if calibration:
            per[label]["reliability"] = reliability(y, s)
        tp += float((y.astype(bool) & pr).sum())
        fp += float((~y.astype(bool) & pr).sum())
        fn += float((y.astype(bool) & ~pr).sum())
    with_support = [v for v in per.values() if v["support"] > 0]
    defined = {k: [v[k] for v in with_support if v[k] is not None] for k in ("precision", "recall", "f1", "auprc", "roc_auc")}
    macro = {k: _r(float(np.mean(vals))) if vals else None for k, vals in defined.items()}
    micro_p = tp / (tp + fp) if tp + fp else 0.0
    micro_r = tp / (tp + fn) if tp + fn else 0.0
    micro = {"precision": _r(micro_p), "recall": _r(micro_r), "f1": _r(2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0)}
    return {"labels": per, "macro": macro, "micro": micro}


def flagged_metrics(Y: np.ndarray, S: np.ndarray, P: np.ndarray, M: np.ndarray) -> dict[str, Any]:
    """Binary 'any label': gold positive when any annotated label is positive; rows with no annotated label skipped."""
    keep = M.max(1) > 0
    y = (Y * M).max(1)[keep]
    s = (S * M).max(1)[keep]
    p = (P * M).max(1)[keep].astype(bool)
    pr, rc, f1 = prf(y, p)
    neg = y == 0
    return {"n": int(keep.sum()), "support": int(y.sum()), "auprc": _r(average_precision(y, s)), "roc_auc": _r(roc_auc(y, s)),
            "precision": _r(pr), "recall": _r(rc), "f1": _r(f1), "ece": _r(expected_calibration_error(y, s)),
            "false_positive_rate_on_clean": _r(float(p[neg].mean()) if neg.any() else float("nan")), "n_clean": int(neg.sum()),
            "reliability": reliability(y, s)}


def citation_metrics(pred: list[list[str]], gold: list[list[str] | None], key: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Precision: share of cited clauses that are gold; recall: share of gold clauses cited. Rows without gold skipped.
    With ``key`` (e.g. clause -> policy area) a citation counts as correct when its key is one of the gold clauses'
    keys, and recall is over the gold keys: the looser question "is it the right part of the policy?"."""
    cited = correct = gold_n = found = rows = 0
    for p, g in zip(pred, gold, strict=True):
        if not g:
            continue
        rows += 1
        cited += len(p)
        if key is None:
            correct += len(set(p) & set(g))
            gold_n += len(g)
            found += len(set(g) & set(p))
        else:
            gk, pk = {key(c) for c in g}, [key(c) for c in p]
            correct += sum(1 for k in pk if k in gk)
            gold_n += len(gk)
            found += len(gk & set(pk))
    return {"rows": rows, "precision": _r(correct / cited) if cited else None, "recall": _r(found / gold_n) if gold_n else None}


def latency(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {}
    a = np.asarray(ms)
    return {"p50": _r(np.percentile(a, 50)), "p95": _r(np.percentile(a, 95)), "p99": _r(np.percentile(a, 99)), "mean": _r(a.mean())}


def bootstrap_ci(fn: Callable[[np.ndarray], float | None], n: int, rounds: int = 500, seed: int = 7) -> tuple[float | None, float | None]:
    """95 % percentile interval of fn(idx) over bootstrap resamples of row indices; resamples where fn is None or NaN are skipped."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(rounds):
        v = fn(rng.integers(0, n, n))
        if v is not None and not math.isnan(v):
            vals.append(v)
    if not vals:
        return None, None
    return _r(float(np.percentile(vals, 2.5))), _r(float(np.percentile(vals, 97.5)))
