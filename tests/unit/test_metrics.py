"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from copilot.classifier.metrics import average_precision, best_f1_threshold, expected_calibration_error, prf, roc_auc
from eval import metrics as EM


def test_average_precision_hand_computed() -> None:
    # Ranked: 0.9(+) 0.8(-) 0.7(+) 0.1(-): precision at the positives = 1/1 and 2/3 -> AP = (1 + 2/3)/2
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    assert math.isnan(average_precision(np.array([0, 0]), np.array([0.3, 0.2])))
    assert math.isnan(average_precision(np.array([1, 1]), np.array([0.3, 0.2])))  # positives only: no ranking to judge


def test_average_precision_ties_are_one_threshold() -> None:
    # Both scores tie: one threshold with precision 1/2, recall 1 -> AP 0.5 whatever the order
    assert average_precision(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert average_precision(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_roc_auc_hand_computed() -> None:
    # Pairs (pos, neg): (0.9,0.8) ok, (0.9,0.1) ok, (0.7,0.8) wrong, (0.7,0.1) ok -> 3/4
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.75)


def test_ece_hand_computed() -> None:
    # bin [0.2,0.3): p=0.2,0.2 y=0,1 -> |0.5-0.2|=0.3, share 0.5; bin [0.9,1]: p=0.9,0.9 y=1,1 -> |1-0.9|=0.1, share 0.5
    y = np.array([0, 1, 1, 1])
    p = np.array([0.2, 0.2, 0.9, 0.9])
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)


def test_prf_and_best_threshold() -> None:
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.6, 0.55, 0.2, 0.1])
    p, r, f = prf(y, s >= 0.5)
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert f == pytest.approx(2 / 3)
    t = best_f1_threshold(y, s)
    # Best F1: threshold between 0.6 and 0.55 -> P=1, R=2/3, F1=0.8 beats every other cut
    assert 0.55 < t < 0.6
    assert prf(y, s >= t)[2] == pytest.approx(0.8)


# Evaluation harness metrics (eval/metrics.py): per-label calibration and the bootstrap interval.

def test_label_ece_and_reliability_hand_computed_with_masked_rows_excluded() -> None:
    from eval.metrics import label_metrics

    # Label "a": rows 0-3 annotated, row 4 masked (its score 0.95 with y=0 would add a badly calibrated bin).
    #   bin 1 [0.1,0.2): p=0.15,0.15 y=0,1 -> mean_p 0.15, frac_pos 0.5, gap 0.35, share 2/4 -> 0.175
    #   bin 8 [0.8,0.9): p=0.85,0.85 y=1,1 -> mean_p 0.85, frac_pos 1.0, gap 0.15, share 2/4 -> 0.075
    #   ECE = 0.25 (with the masked row included it would be 2/5*0.35 + 2/5*0.15 + 1/5*0.95 = 0.39).
    # Label "b": all rows annotated. bin 0: p=0.05 x4, y=0 -> gap 0.05, share 4/5 -> 0.04; bin 9: p=0.95, y=1 -> gap 0.05,
    #   share 1/5 -> 0.01; ECE = 0.05.
    # Label "c": no row annotates it -> no ECE and an empty table.
    Y = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
    S = np.array([[0.15, 0.05, 0.5], [0.15, 0.05, 0.5], [0.85, 0.05, 0.5], [0.85, 0.05, 0.5], [0.95, 0.95, 0.5]])
    M = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    P = (S >= 0.5).astype(float)
    per = label_metrics(Y, S, P, M, ["a", "b", "c"])["labels"]
    assert per["a"]["ece"] == pytest.approx(0.25)
    assert per["a"]["reliability"] == [{"bin": 1, "n": 2, "mean_p": 0.15, "frac_pos": 0.5}, {"bin": 8, "n": 2, "mean_p": 0.85, "frac_pos": 1.0}]
    assert per["b"]["ece"] == pytest.approx(0.05)
    assert [(b["bin"], b["n"]) for b in per["b"]["reliability"]] == [(0, 4), (9, 1)]
    assert per["c"]["ece"] is None and per["c"]["reliability"] == []
    # The table and the ECE use the same bins: ECE is the count-weighted gap of the table.
    for v in (per["a"], per["b"]):
        n = sum(b["n"] for b in v["reliability"])
        assert v["ece"] == pytest.approx(sum(b["n"] / n * abs(b["frac_pos"] - b["mean_p"]) for b in v["reliability"]))
    # Summary-only mode (bootstrap, slices) keeps the ECE but leaves the table out.
    assert "reliability" not in label_metrics(Y, S, P, M, ["a"], calibration=False)["labels"]["a"]


def _mean_ci(x: np.ndarray, **kw: int) -> tuple[float | None, float | None]:
    from eval.metrics import bootstrap_ci

    return bootstrap_ci(lambda idx: float(x[idx].mean()), len(x), **kw)


def test_bootstrap_interval_contains_the_point_estimate() -> None:
    x = np.random.default_rng(0).normal(3.0, 1.0, 200)
    lo, hi = _mean_ci(x)
    assert lo is not None and hi is not None
    assert lo < x.mean() < hi and hi - lo > 0.1


def test_bootstrap_constant_statistic_has_zero_width() -> None:
    from eval.metrics import bootstrap_ci

    assert bootstrap_ci(lambda idx: 0.42, 50) == (0.42, 0.42)


def test_bootstrap_is_reproducible_by_seed() -> None:
    x = np.random.default_rng(1).random(100)
    assert _mean_ci(x, seed=3) == _mean_ci(x, seed=3)
    assert len({_mean_ci(x, seed=s) for s in range(5)}) > 1


def test_bootstrap_width_of_a_bernoulli_mean_matches_the_normal_approximation() -> None:
    # Normal approximation: 95 % interval of a proportion is p_hat +- 1.96 * sqrt(p_hat (1 - p_hat) / n).
    x = (np.random.default_rng(2).random(400) < 0.3).astype(float)
    p = x.mean()
    lo, hi = _mean_ci(x, rounds=2000)
    assert lo is not None and hi is not None
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / len(x)), rel=0.25)


def test_bootstrap_interval_halves_when_the_sample_grows_fourfold() -> None:
    rng = np.random.default_rng(4)
    small, large = rng.normal(0, 1, 250), rng.normal(0, 1, 1000)
    (lo1, hi1), (lo2, hi2) = _mean_ci(small, rounds=2000), _mean_ci(large, rounds=2000)
    assert None not in (lo1, hi1, lo2, hi2)
    assert (hi2 - lo2) / (hi1 - lo1) == pytest.approx(0.5, abs=0.12)  # type: ignore[operator]


def test_bootstrap_skips_none_and_nan_resamples() -> None:
    from eval.metrics import bootstrap_ci

    # A third of the resamples give None, a third NaN, the rest 1.0: kept, the None and NaN values would make the
    # percentiles fail or NaN; skipped, the interval is exactly (1.0, 1.0).
    def stat(idx: np.ndarray) -> float | None:
        return (None, float("nan"), 1.0)[int(idx[0]) % 3]

    assert bootstrap_ci(stat, 30, rounds=300) == (1.0, 1.0)
    # The kept values are the valid resamples in draw order: the same interval as computed by hand from the same stream.
    x = np.random.default_rng(5).random(40)

    def mean_or_none(idx: np.ndarray) -> float | None:
        return None if idx[0] < 10 else float(x[idx].mean())

    rng = np.random.default_rng(9)
    draws = [rng.integers(0, 40, 40) for _ in range(400)]
    vals = [float(x[d].mean()) for d in draws if d[0] >= 10]
    assert 0 < len(vals) < 400
    expected = (round(float(np.percentile(vals, 2.5)), 4), round(float(np.percentile(vals, 97.5)), 4))
    assert bootstrap_ci(mean_or_none, 40, rounds=400, seed=9) == expected
    assert bootstrap_ci(lambda idx: None, 30) == (None, None)
    assert bootstrap_ci(lambda idx: float("nan"), 30) == (None, None)


def test_macro_of_a_metric_no_label_defines_is_none_without_warning() -> None:
    import warnings

    from eval.metrics import label_metrics

    # Every annotated row positive: ROC-AUC is undefined for the only label, so its macro is None (not NaN, no warning).
    Y = np.ones((4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        macro = label_metrics(Y, np.array([[0.9], [0.8], [0.7], [0.6]]), Y, Y, ["privacy"])["macro"]
    assert macro["roc_auc"] is None and macro["f1"] == 1.0


def test_citation_metrics_exact_and_by_area_hand_computed() -> None:
    pred = [["HAT-1.1", "HAR-2.2"], ["VIO-1.1"], [], ["SPM-1.1"]]
    gold: list[list[str] | None] = [["HAT-1.2"], ["VIO-1.1", "VIO-9.1"], ["SH-1.1"], None]  # last row: no gold, skipped
    exact = EM.citation_metrics(pred, gold)
    assert exact == {"rows": 3, "precision": round(1 / 3, 4), "recall": round(1 / 4, 4)}
    by_area = EM.citation_metrics(pred, gold, key=lambda cid: cid.split("-")[0])
    # cited 3: HAT-1.1 (HAT is gold's area: right), HAR-2.2 (wrong), VIO-1.1 (right); gold areas {HAT}, {VIO}, {SH}: 2 of 3 found
    assert by_area == {"rows": 3, "precision": round(2 / 3, 4), "recall": round(2 / 3, 4)}
