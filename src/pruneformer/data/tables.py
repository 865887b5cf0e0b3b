"""Local tables: CSV, TSV, JSON Lines and Parquet files loaded into a :class:`DataBundle`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from ..errors import DataError, brief
from .bundle import CLASSIFICATION, REGRESSION, DataBundle, TaskSpec
from .labels import build_split, check_no_missing, classification_metrics, infer_scheme, require_columns

_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    # keep_default_na=False: a review that says "NA" or "null" is text, not a missing value.
    ".csv": ("csv", {"keep_default_na": False}),
    ".tsv": ("csv", {"delimiter": "\t", "keep_default_na": False}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
    ".pq": ("parquet", {}),
}


def _read_table(path: str | Path, split: str) -> pd.DataFrame:
    """Read one local file with ``datasets.load_dataset`` into pandas.

    The Arrow cache goes to a throw-away directory and the table is kept in memory: we convert to pandas at once,
    so a persistent cache would only leave copies of user data in ``~/.cache``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{split} file {p} does not exist.",
                        "check the path (relative paths are from the current directory).")
    if not p.is_file():
        raise DataError(f"{split} path {p} is a directory, not a data file.",
                        "point at a .csv, .tsv, .jsonl, .json or .parquet file.")
    suffix = p.suffix.lower()
    if suffix not in _FORMATS:
        raise DataError(f"{split} file {p} has unsupported extension '{p.suffix}'.",
                        f"convert it to one of: {', '.join(_FORMATS)}.")
    builder, options = _FORMATS[suffix]
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a "Generating train split" bar per small file is noise, not progress
    try:
        with tempfile.TemporaryDirectory(prefix="pruneformer-load-") as tmp:
            ds = datasets.load_dataset(builder, data_files={"train": str(p)}, split="train", cache_dir=tmp,
                                       keep_in_memory=True, **options)
            df = ds.to_pandas()
    except DataError:
        raise
    except Exception as exc:  # parsers raise many unrelated types; all mean "this file is not valid <format>"
        if p.stat().st_size == 0 or "corresponds to no data" in str(exc):  # empty, or a header and nothing else
            raise DataError(f"{split} file {p} has no rows.", "give a file with at least one example.") from exc
        raise DataError(f"could not read {split} file {p} as {suffix[1:]}: {brief(exc)}.",
                        f"check that it is valid {suffix[1:]} with one example per row.") from exc
    finally:
        if bars:
            datasets.enable_progress_bars()
    if len(df) == 0:
        raise DataError(f"{split} file {p} has no rows.", "give a file with at least one example.")
    return df


def _split_off_dev(n: int, dev_fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < dev_fraction < 1.0:
        raise DataError(f"dev_fraction={dev_fraction} is not between 0 and 1.",
                        "use e.g. dev_fraction=0.1, or pass a dev file.")
    n_dev = max(1, int(round(n * dev_fraction)))
    if n_dev >= n:
        raise DataError(f"{where} has only {n} row(s), too few to split off a dev set.",
                        "add training rows or pass a separate dev file.")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_dev:]), np.sort(perm[:n_dev])


def load_local(
    train: str | Path,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    task_type: str = "auto",
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> DataBundle:
    """Load CSV / TSV / JSON Lines / Parquet files into a bundle.

    The label map is inferred from the *train* file (see :func:`infer_scheme`) and applied to dev and test, so
    class ids mean the same thing in every split; a dev/test label unknown to train is an error. Without a dev
    file, a seeded ``dev_fraction`` of the train rows becomes dev. The task is named after the train file's stem.
    """
    columns = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column}
    train_df = _read_table(train, "train")
    train_where = f"train file {Path(train)}"
    require_columns(train_df, columns, train_where)
    scheme = infer_scheme(_labels_checked(train_df, label_column, train_where), task_type, train_where)

    frames: dict[str, tuple[pd.DataFrame, str]] = {}
    if dev is None:
        tr_idx, dev_idx = _split_off_dev(len(train_df), dev_fraction, seed, train_where)
        frames["train"] = (train_df.iloc[tr_idx].reset_index(drop=True), train_where)
        frames["dev"] = (train_df.iloc[dev_idx].reset_index(drop=True), f"dev rows split off {train_where}")
    else:
        frames["train"] = (train_df, train_where)
        frames["dev"] = (_read_table(dev, "dev"), f"dev file {Path(dev)}")
    if test is not None:
        frames["test"] = (_read_table(test, "test"), f"test file {Path(test)}")

    splits: dict[str, datasets.Dataset] = {}
    for name, (df, where) in frames.items():
        require_columns(df, columns, where)
        check_no_missing(df, text_column, "text", where)
        if text_pair_column is not None:
            check_no_missing(df, text_pair_column, "text pair", where)
        labels = scheme.encode(_labels_checked(df, label_column, where), where, train_where)
        splits[name] = build_split(df, text_column, text_pair_column, labels, scheme.regression)

    task = TaskSpec(
        name=Path(train).stem,
        text_column="text",
        text_pair_column="text_pair" if text_pair_column is not None else None,
        label_column="label",
        problem_type=REGRESSION if scheme.regression else CLASSIFICATION,
        num_labels=1 if scheme.regression else scheme.num_labels,
        label_names=scheme.names,
        metrics=["pearson", "spearman"] if scheme.regression else classification_metrics(scheme.num_labels),
    )
    return DataBundle(task=task, train=splits["train"], dev=splits["dev"], test=splits.get("test"))


def _labels_checked(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    check_no_missing(df, column, "label", where)
    return df[column]
