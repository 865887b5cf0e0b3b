"""The uniform shape every data source loads into: a :class:`TaskSpec` and a :class:`DataBundle` of splits.

Every split of a bundle has a ``text`` column, a ``text_pair`` column for sentence-pair tasks and a ``label``
column (int64 for classification, float32 for regression); the :class:`TaskSpec` describes how to read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from ..errors import DataError

CLASSIFICATION = "single_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (CLASSIFICATION, REGRESSION)


@dataclass(frozen=True)
class TaskSpec:
    """What a bundle's columns mean and how to score predictions on it.

    Stored next to every checkpoint (:meth:`to_dict`), so a saved model can be evaluated on the same label map
    and metrics it was trained with.
    """

    name: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    problem_type: str
    num_labels: int
    label_names: list[str] | None
    metrics: list[str]

    @property
    def is_regression(self) -> bool:
        """True for real-valued targets (one output, MSE loss, correlation metrics)."""
        return self.problem_type == REGRESSION

    @property
    def primary_metric(self) -> str:
        """The metric used for model selection and report headlines: the first one listed."""
        return self.metrics[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (lists are copied, so mutating it cannot change the spec)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """Inverse of :meth:`to_dict`, for reading a spec back from a checkpoint."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise DataError(f"task description lacks field(s) {', '.join(missing)}.", "re-save it with to_dict().")
        kwargs = {k: data[k] for k in names}
        kwargs["label_names"] = list(kwargs["label_names"]) if kwargs["label_names"] is not None else None
        kwargs["metrics"] = list(kwargs["metrics"])
        return cls(**kwargs)


@dataclass
class DataBundle:
    """A task plus its train / dev (/ test) splits, all with the columns the task spec names."""

    task: TaskSpec
    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset | None = None

    def split_sizes(self) -> dict[str, int]:
        """Number of rows per split (test is 0 when absent), for logs and reports."""
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test) if self.test is not None else 0}

    def subsample(self, max_train: int | None, max_eval: int | None, seed: int) -> DataBundle:
        """Return a bundle with at most ``max_train`` training and ``max_eval`` dev/test rows.

        The rows are a seeded random subset (each split draws with its own ``numpy`` generator seeded by
        ``seed``), so a quick preset sees a representative sample and the same rows on every run.
        """
        return DataBundle(
            task=self.task,
            train=_take(self.train, max_train, seed, "max_train"),
            dev=_take(self.dev, max_eval, seed, "max_eval"),
            test=_take(self.test, max_eval, seed, "max_eval") if self.test is not None else None,
        )


def _take(ds: datasets.Dataset, limit: int | None, seed: int, what: str) -> datasets.Dataset:
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise DataError(f"{what}={limit} would leave an empty split.", f"use {what} >= 1, or None for all rows.")
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:limit])
    return ds.select(idx.tolist())
