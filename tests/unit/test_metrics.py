"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from copilot.classifier.metrics import average_precision, best_f1_threshold, expected_calibration_error, prf, roc_auc


def test_average_precision_hand_computed() -> None:
    # Ranked: 0.9(+) 0.8(-) 0.7(+) 0.1(-): precision at the positives = 1/1 and 2/3 -> AP = (1 + 2/3)/2
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    assert math.isnan(average_precision(np.array([0, 0]), np.array([0.3, 0.2])))


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
