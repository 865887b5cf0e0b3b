"""Evaluation metrics for text classification and regression (GLUE-style).

Thin wrappers around scikit-learn and SciPy so that every number pruneformer reports is computed the way the
GLUE leaderboard and the papers we compare against compute it, not by a hand-written re-implementation.

Metric names are plain strings so that they can live in a :class:`~pruneformer.data.TaskSpec`, a recipe file
or a report. The *first* name in a task's list is its primary metric: the one used for model selection and the
headline number in reports (see :func:`primary_metric`). All metrics here are "higher is better".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from pruneformer.errors import DataError

#: Metrics that compare predicted class ids with integer labels.
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "f1", "mcc")
#: Metrics that compare real-valued predictions with real-valued labels.
REGRESSION_METRICS: tuple[str, ...] = ("pearson", "spearman")
#: Every metric name :func:`compute_metrics` understands.
ALL_METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + REGRESSION_METRICS


def primary_metric(metric_names: Sequence[str]) -> str:
    """Return the primary metric of a task: by convention the first name in its list.

    One rule in one place, so that model selection, early stopping and reports never disagree about which
    number counts.
    """
    if not metric_names:
        raise DataError("the task has an empty metric list.", f"give at least one of: {', '.join(ALL_METRICS)}.")
    return metric_names[0]


def _check_names(metric_names: Sequence[str]) -> list[str]:
    if isinstance(metric_names, str):  # a bare string would silently be iterated character by character
        metric_names = [metric_names]
    names = list(metric_names)
    if not names:
        raise DataError("no metric names were given.", f"ask for at least one of: {', '.join(ALL_METRICS)}.")
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown:
        raise DataError(
            f"unknown metric name(s): {', '.join(map(repr, unknown))}.",
            f"use any of: {', '.join(ALL_METRICS)}.",
        )
    return names


def _class_predictions(predictions: np.ndarray) -> np.ndarray:
    """Turn logits [n, C] into class ids; 1-D integer arrays are taken as class ids already."""
    if predictions.ndim == 2 and predictions.shape[1] > 1:
        return predictions.argmax(axis=1)
    if predictions.ndim == 1 and np.issubdtype(predictions.dtype, np.integer):
        return predictions
    raise DataError(
        f"classification metrics need logits of shape [n, C>1] (or integer class ids [n]), got shape "
        f"{tuple(predictions.shape)} with dtype {predictions.dtype}.",
        "pass the model's logits, or use pearson/spearman for a regression task.",
    )


def _regression_predictions(predictions: np.ndarray) -> np.ndarray:
    """Accept [n] or [n, 1] real-valued predictions."""
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        return predictions[:, 0].astype(np.float64)
    if predictions.ndim == 1:
        return predictions.astype(np.float64)
    raise DataError(
        f"regression metrics need predictions of shape [n] or [n, 1], got {tuple(predictions.shape)}.",
        "use a model with num_labels=1 for regression, or accuracy/f1/mcc for classification.",
    )


def _correlation(kind: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson/Spearman correlation; 0.0 when either side is constant.

    A constant prediction carries no ranking information, and a NaN would make every later comparison during
    model selection false, so we report 0.0 (the value such a model earns) instead of SciPy's NaN.
    """
    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(predictions, labels) if kind == "pearson" else stats.spearmanr(predictions, labels)
    return float(result[0])


def compute_metrics(metric_names: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Compute the named metrics, in the order given, from raw model outputs.

    ``predictions`` are logits ``[n, C]`` for classification (arg-maxed here, so callers never need to know the
    task type) or ``[n]`` / ``[n, 1]`` values for regression. ``f1`` is binary F1 of class 1 (GLUE's MRPC/QQP
    convention); ``mcc`` is Matthews correlation (CoLA).
    """
    names = _check_names(metric_names)
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {tuple(labels.shape)}.", "pass one label per example.")
    if len(labels) == 0:
        raise DataError("cannot compute metrics on zero examples.", "evaluate on a split with at least one example.")
    if predictions.shape[0] != labels.shape[0]:
        raise DataError(
            f"got {predictions.shape[0]} predictions for {labels.shape[0]} labels.",
            "pass exactly one prediction row per labelled example.",
        )

    results: dict[str, float] = {}
    if any(n in CLASSIFICATION_METRICS for n in names):
        preds = _class_predictions(predictions)
        y = labels.astype(np.int64)
        for name in names:
            if name == "accuracy":
                results[name] = float(accuracy_score(y, preds))
            elif name == "f1":
                if max(int(y.max()), int(preds.max())) > 1 or min(int(y.min()), int(preds.min())) < 0:
                    raise DataError(
                        "f1 is binary F1 of class 1 but the labels or predictions have classes other than 0/1.",
                        "use accuracy (or mcc) for tasks with more than two classes.",
                    )
                results[name] = float(f1_score(y, preds, average="binary", pos_label=1, zero_division=0))
            elif name == "mcc":
                results[name] = float(matthews_corrcoef(y, preds))
    if any(n in REGRESSION_METRICS for n in names):
        values = _regression_predictions(predictions)
        y = labels.astype(np.float64)
        for name in names:
            if name in REGRESSION_METRICS:
                results[name] = _correlation(name, values, y)
    return {name: results[name] for name in names}
