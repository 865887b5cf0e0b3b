"""Columns and labels, the same for every source: the canonical schema and the label maps.

Local tables and GLUE files both end in :func:`build_split` (columns renamed to ``text`` / ``text_pair`` /
``label``, dtypes fixed); :func:`infer_scheme` decides from the training labels whether a task is
classification or regression and how raw labels map to class ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pandas as pd

from ..errors import DataError


def classification_metrics(num_labels: int) -> list[str]:
    return ["accuracy", "f1"] if num_labels == 2 else ["accuracy"]


def build_split(
    df: pd.DataFrame, text: str, pair: str | None, labels: np.ndarray, regression: bool
) -> datasets.Dataset:
    """Rename to the canonical columns and fix dtypes, so every source yields the same schema."""
    data: dict[str, Any] = {"text": df[text].astype(str).tolist()}
    feats: dict[str, datasets.Value] = {"text": datasets.Value("string")}
    if pair is not None:
        data["text_pair"] = df[pair].astype(str).tolist()
        feats["text_pair"] = datasets.Value("string")
    data["label"] = labels.astype(np.float32 if regression else np.int64)
    feats["label"] = datasets.Value("float32" if regression else "int64")
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def _is_missing(values: pd.Series) -> np.ndarray:
    missing = np.array(values.isna(), dtype=bool)  # a copy: pandas 3 hands out read-only views
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        missing |= np.array(values.astype(str).str.strip().eq(""), dtype=bool)
    return missing


def check_no_missing(df: pd.DataFrame, column: str, what: str, where: str) -> None:
    missing = _is_missing(df[column])
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{where}: {int(missing.sum())} row(s) have an empty {what} column '{column}' (first at row {first}).",
            "fill or drop those rows.",
        )


def require_columns(df: pd.DataFrame, wanted: dict[str, str | None], where: str, fix: str | None = None) -> None:
    """``wanted`` maps the option name (text_column, ...) to the column the user asked for."""
    for option, column in wanted.items():
        if column is not None and column not in df.columns:
            have = ", ".join(str(c) for c in df.columns)
            raise DataError(f"{where} has no column '{column}' (the {option}); its columns are: {have}.",
                            fix or f"set {option} to one of those columns.")


@dataclass
class LabelScheme:
    """How raw label values map to model targets; inferred from the train split and applied to all."""

    regression: bool
    names: list[str] | None = None  # string classes, sorted; index = class id
    num_labels: int = 1
    index: dict[str, int] = field(default_factory=dict)

    def encode(self, values: pd.Series, where: str, train_where: str) -> np.ndarray:
        if self.regression:
            nums = pd.to_numeric(values, errors="coerce")
            bad = nums.isna().to_numpy()
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise DataError(f"{where}: label {values.iloc[first]!r} (row {first}) is not a number.",
                                "use numeric labels for a regression task.")
            return nums.to_numpy(dtype=np.float64)
        if self.names is not None:
            keys = values.astype(str).str.strip()
            unseen = sorted(set(keys) - set(self.index))
            if unseen:
                shown = ", ".join(map(repr, unseen[:5])) + (" ..." if len(unseen) > 5 else "")
                raise DataError(f"{where} has label(s) {shown} that do not occur in {train_where} "
                                f"(known: {', '.join(self.names)}).",
                                "fix those labels, or add examples of them to the training data.")
            return keys.map(self.index).to_numpy(dtype=np.int64)
        ints = _integer_labels(values, where)
        if ints is None:
            raise DataError(f"{where}: labels are not whole numbers but the training labels are classes.",
                            "use the same kind of labels in every split.")
        unseen = sorted(set(ints[(ints < 0) | (ints >= self.num_labels)].tolist()))
        if unseen:
            raise DataError(f"{where} has label(s) {unseen[:5]} outside the classes 0..{self.num_labels - 1} "
                            f"seen in {train_where}.",
                            "fix those labels, or add examples of them to the training data.")
        return ints


def _integer_labels(values: pd.Series, where: str) -> np.ndarray | None:
    """Whole-number labels as int64, or None if the column holds non-integer numbers or strings."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
    return None


def infer_scheme(values: pd.Series, task_type: str, where: str) -> LabelScheme:
    """Decide classification vs regression and the label map from the training labels.

    strings -> classes ``sorted(unique)``; whole numbers -> classes ``0..max`` (``num_labels = max + 1``, so the
    ids in the file are the model's class ids, even if some class is absent from train); other numbers ->
    regression. ``task_type`` ("classification" / "regression") overrides the guess.
    """
    if task_type not in ("auto", "classification", "regression"):
        raise DataError(f"unknown task_type {task_type!r}.", "use 'auto', 'classification' or 'regression'.")
    numeric = pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)
    if task_type == "regression":
        if pd.api.types.is_bool_dtype(values.dtype):
            raise DataError(f"{where}: labels are true/false, which cannot be regressed.",
                            "use task_type='classification' (or 'auto').")
        return LabelScheme(regression=True)
    if numeric and not pd.api.types.is_bool_dtype(values.dtype):
        ints = _integer_labels(values, where)
        if ints is None:
            if task_type == "classification":
                raise DataError(f"{where}: labels are non-integer numbers (e.g. {values.iloc[0]!r}), not classes.",
                                "use task_type='regression', or integer or string class labels.")
            return LabelScheme(regression=True)
        if ints.min() < 0:
            raise DataError(f"{where}: integer class labels must be 0..C-1 but include {int(ints.min())}.",
                            "renumber the classes from 0, or use string labels (mapped in sorted order).")
        num = int(ints.max()) + 1
        if num < 2:
            raise DataError(f"{where}: every label is {int(ints.max())}; a classifier needs at least two classes.",
                            "check the label column (or use task_type='regression').")
        return LabelScheme(regression=False, num_labels=num)
    if pd.api.types.is_bool_dtype(values.dtype):
        return LabelScheme(regression=False, num_labels=2)
    names = sorted(set(values.astype(str).str.strip()))
    if len(names) < 2:
        raise DataError(f"{where}: every label is {names[0]!r}; a classifier needs at least two classes.",
                        "check the label column.")
    return LabelScheme(regression=False, names=names, num_labels=len(names),
                        index={n: i for i, n in enumerate(names)})
