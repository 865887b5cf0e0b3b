"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pruneformer.data.metrics import ALL_METRICS, compute_metrics, primary_metric
from pruneformer.errors import DataError


def logits_for(classes: list[int], num_classes: int = 2) -> np.ndarray:
    """One-hot-ish logits whose argmax is ``classes``."""
    out = np.zeros((len(classes), num_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 3.0
    return out


# Confusion (rows = truth, cols = prediction): TN=3, FP=1, FN=2, TP=4.
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PREDS = [0, 0, 0, 1, 0, 0, 1, 1, 1, 1]


def test_accuracy_f1_mcc_known_confusion():
    scores = compute_metrics(["accuracy", "f1", "mcc"], logits_for(PREDS), LABELS)
    tp, tn, fp, fn = 4, 3, 1, 2
    assert list(scores) == ["accuracy", "f1", "mcc"]
    assert scores["accuracy"] == pytest.approx(7 / 10)
    assert scores["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 8/11
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert scores["mcc"] == pytest.approx(mcc)  # 10 / sqrt(5*6*4*5) = 0.40825
    assert scores["mcc"] == pytest.approx(0.408248, abs=1e-6)


def test_f1_positive_class_is_one_and_order_follows_request():
    # All predictions negative: F1 of class 1 is 0 (not NaN), accuracy is the share of negatives.
    scores = compute_metrics(["f1", "accuracy"], logits_for([0, 0, 0, 0]), np.array([0, 1, 0, 1]))
    assert list(scores) == ["f1", "accuracy"]
    assert scores == {"f1": 0.0, "accuracy": 0.5}


def test_multiclass_accuracy_and_integer_predictions():
    labels = np.array([0, 1, 2, 2, 1])
    logits = logits_for([0, 2, 2, 2, 1], num_classes=3)
    assert compute_metrics(["accuracy"], logits, labels) == {"accuracy": pytest.approx(0.8)}
    assert compute_metrics(["accuracy"], np.array([0, 2, 2, 2, 1]), labels) == {"accuracy": pytest.approx(0.8)}
    with pytest.raises(DataError, match="binary"):
        compute_metrics(["f1"], logits, labels)


def test_pearson_spearman_known_values():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    preds = np.array([[1.0], [3.0], [2.0], [4.0]])  # [n, 1] regression output
    scores = compute_metrics(["pearson", "spearman"], preds, labels)
    # Pearson: x-mean = (-1.5,-.5,.5,1.5), y-mean = (-1.5,.5,-.5,1.5): cov 4, var 5 -> 0.8.
    assert scores["pearson"] == pytest.approx(0.8)
    # Spearman on ranks (1,3,2,4) vs (1,2,3,4): 1 - 6*2/(4*15) = 0.8.
    assert scores["spearman"] == pytest.approx(0.8)
    assert compute_metrics(["spearman"], np.array([4.0, 3.0, 2.0, 1.0]), labels)["spearman"] == pytest.approx(-1.0)


def test_constant_regression_predictions_score_zero_not_nan():
    scores = compute_metrics(["pearson", "spearman"], np.ones(4), np.array([0.0, 1.0, 2.0, 3.0]))
    assert scores == {"pearson": 0.0, "spearman": 0.0}


def test_bad_inputs_raise_one_line_data_errors():
    with pytest.raises(DataError, match="unknown metric") as err:
        compute_metrics(["acc"], logits_for([0, 1]), np.array([0, 1]))
    assert "\n" not in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(DataError, match="3 predictions for 2 labels"):
        compute_metrics(["accuracy"], logits_for([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(DataError, match=r"\[n, C>1\]"):
        compute_metrics(["accuracy"], np.array([0.2, 0.7]), np.array([0, 1]))
    with pytest.raises(DataError, match="regression metrics"):
        compute_metrics(["pearson"], logits_for([0, 1]), np.array([0.0, 1.0]))
    with pytest.raises(DataError, match="zero examples"):
        compute_metrics(["accuracy"], np.zeros((0, 2)), np.zeros(0))


def test_primary_metric_is_first():
    assert primary_metric(["f1", "accuracy"]) == "f1"
    assert set(ALL_METRICS) == {"accuracy", "f1", "mcc", "pearson", "spearman"}
    with pytest.raises(DataError):
        primary_metric([])
