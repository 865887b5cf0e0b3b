"""Loading text-classification data into a uniform :class:`DataBundle`.

Three sources, one output shape, so the trainer and the pruning methods never care where data came from:

* the **embedded** movie-sentiment task (default): the 10,605 movie-review snippets with human mean sentiment
  scores that ship inside the ``vaderSentiment==3.3.2`` source distribution on PyPI (Hutto & Gilbert, ICWSM
  2014). It is fetched once with ``pip download`` (PyPI is reachable where the Hugging Face hub may not be),
  verified by sha256 and cached under ``<cache>/vader/``;
* **local files**: CSV, TSV, JSON Lines and Parquet;
* a **GLUE** directory in the standard ``glue_data/<TASK>/{train,dev}.tsv`` layout.

Every split of a bundle has a ``text`` column, a ``text_pair`` column for sentence-pair tasks and a ``label``
column (int64 for classification, float32 for regression); the :class:`TaskSpec` describes how to read it.
Every user mistake raises :class:`~pruneformer.errors.DataError` with one line naming the problem and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets.fingerprint import generate_random_fingerprint
import numpy as np
import pandas as pd

from pruneformer.errors import DataError

CLASSIFICATION = "single_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (CLASSIFICATION, REGRESSION)

# --------------------------------------------------------------------------------------------------------------
# Task description and bundle
# --------------------------------------------------------------------------------------------------------------


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


def default_cache_dir() -> Path:
    """Where pruneformer keeps downloaded data: ``$PRUNEFORMER_CACHE`` or ``~/.cache/pruneformer``.

    An environment variable rather than a config file so that CI, tests and shared machines can redirect it.
    """
    env = os.environ.get("PRUNEFORMER_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pruneformer"


def _one_line(text: str, limit: int = 240) -> str:
    """Collapse an exception or tool output to one short line (error messages must be one line)."""
    line = " ".join(str(text).split()).rstrip(".!")  # callers add their own full stop
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a shared cache should be readable like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------------------
# Embedded movie-sentiment data (vaderSentiment 3.3.2 sdist)
# --------------------------------------------------------------------------------------------------------------

VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_ENV = "PRUNEFORMER_VADER_SDIST"
#: Path of the data archive inside the sdist (below its top-level ``vaderSentiment-3.3.2/`` folder).
VADER_ARCHIVE_MEMBER = "additional_resources/hutto_ICWSM_2014.tar.gz"
#: sha256 of ``hutto_ICWSM_2014.tar.gz`` as shipped in vaderSentiment-3.3.2.tar.gz (2,338,514 bytes).
VADER_ARCHIVE_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
VADER_SNIPPETS_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
#: sha256 of the extracted ``movieReviewSnippets_GroundTruth.txt`` (1,383,098 bytes, 10,605 rows).
VADER_SNIPPETS_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
EMBEDDED_DEV_SIZE = 1000
EMBEDDED_TEST_SIZE = 1000
EMBEDDED_TASK = TaskSpec(
    name="movie-sentiment",
    text_column="text",
    text_pair_column=None,
    label_column="label",
    problem_type=CLASSIFICATION,
    num_labels=2,
    label_names=["negative", "positive"],
    metrics=["accuracy", "f1"],
)
_MANUAL_FETCH = (
    f"on a machine with network run `pip download --no-deps --no-binary :all: {VADER_REQUIREMENT}` (or download "
    f"{VADER_SDIST_NAME} from https://pypi.org/project/vaderSentiment/3.3.2/#files), copy it here and set "
    f"{VADER_SDIST_ENV}=/path/to/{VADER_SDIST_NAME}."
)


def _download_vader_sdist(dest: Path) -> Path:
    """Fetch the sdist with pip, which works wherever PyPI does (proxies, mirrors, pip.conf) without new code."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", VADER_REQUIREMENT]
    cmd += ["-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"could not run pip to download {VADER_REQUIREMENT}: {_one_line(exc)}.", _MANUAL_FETCH) from exc
    found = sorted(dest.glob("vaderSentiment-*.tar.gz"))
    if proc.returncode != 0 or not found:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        reason = _one_line(lines[-1]) if lines else f"exit status {proc.returncode}"
        raise DataError(f"pip could not download {VADER_REQUIREMENT} ({reason}).", _MANUAL_FETCH)
    return found[0]


def _archive_from_sdist(sdist: Path) -> bytes:
    """Read the inner ICWSM archive out of the sdist without extracting anything else to disk."""
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(VADER_ARCHIVE_MEMBER):
                    fobj = tar.extractfile(member)
                    if fobj is not None:
                        return fobj.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{sdist} is not a readable .tar.gz ({_one_line(exc)}).", _MANUAL_FETCH) from exc
    raise DataError(f"{sdist} does not contain {VADER_ARCHIVE_MEMBER}; it is not the {VADER_REQUIREMENT} sdist.",
                    _MANUAL_FETCH)


def _snippets_from_archive(archive: Path) -> bytes:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(VADER_SNIPPETS_MEMBER.split("/")[-1]):
                    fobj = tar.extractfile(member)
                    if fobj is not None:
                        return fobj.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {archive} ({_one_line(exc)}).",
                        f"delete {archive.parent} and run again.") from exc
    raise DataError(f"{archive} does not contain {VADER_SNIPPETS_MEMBER}.", f"delete {archive.parent} and run again.")


def ensure_vader_snippets(cache_dir: str | Path | None = None) -> Path:
    """Return the path of the cached, verified ``movieReviewSnippets_GroundTruth.txt``, fetching it if needed.

    Order: verify a cached archive (a corrupt one is an error, never silently used), reuse a cached text file
    whose hash matches, otherwise take the sdist from ``$PRUNEFORMER_VADER_SDIST`` or ``pip download``.
    """
    vdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    vdir = vdir / "vader"
    archive = vdir / VADER_ARCHIVE_MEMBER.split("/")[-1]
    snippets = vdir / VADER_SNIPPETS_MEMBER.split("/")[-1]

    if archive.exists():
        digest = _sha256(archive)
        if digest != VADER_ARCHIVE_SHA256:
            raise DataError(
                f"cached archive {archive} is corrupt (sha256 {digest[:12]}..., "
                f"expected {VADER_ARCHIVE_SHA256[:12]}...).",
                f"delete {vdir} and run again to fetch a fresh copy.",
            )
    if snippets.exists() and _sha256(snippets) == VADER_SNIPPETS_SHA256:
        return snippets

    if not archive.exists():
        env = os.environ.get(VADER_SDIST_ENV, "").strip()
        if env:
            sdist = Path(env).expanduser()
            if not sdist.is_file():
                raise DataError(f"{VADER_SDIST_ENV} points at {sdist}, which is not a file.", _MANUAL_FETCH)
            data = _archive_from_sdist(sdist)
            origin = str(sdist)
        else:
            with tempfile.TemporaryDirectory(prefix="pruneformer-vader-") as tmp:
                data = _archive_from_sdist(_download_vader_sdist(Path(tmp)))
            origin = f"pip download {VADER_REQUIREMENT}"
        digest = hashlib.sha256(data).hexdigest()
        if digest != VADER_ARCHIVE_SHA256:
            raise DataError(
                f"{VADER_ARCHIVE_MEMBER} from {origin} has sha256 {digest[:12]}..., expected "
                f"{VADER_ARCHIVE_SHA256[:12]}... (wrong or tampered file).",
                f"use the original {VADER_SDIST_NAME} from PyPI.",
            )
        _atomic_write(archive, data)

    text = _snippets_from_archive(archive)
    if hashlib.sha256(text).hexdigest() != VADER_SNIPPETS_SHA256:
        raise DataError(f"{VADER_SNIPPETS_MEMBER} in {archive} has an unexpected sha256.",
                        f"delete {vdir} and run again.")
    _atomic_write(snippets, text)
    return snippets


def _parse_vader_snippets(path: Path) -> pd.DataFrame:
    """Parse ``id<TAB>mean score<TAB>sentence`` lines (CRLF, UTF-8) into text / label / score."""
    rows: list[tuple[str, float]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            score = float(parts[1])
        except (IndexError, ValueError):
            raise DataError(f"{path} line {lineno} is not 'id<TAB>score<TAB>text'.",
                            f"delete {path.parent} and run again.") from None
        rows.append((parts[2].strip() if len(parts) > 2 else "", score))
    df = pd.DataFrame(rows, columns=["text", "score"])
    # A mean score of exactly 0 is neither positive nor negative (37 snippets): drop rather than guess.
    df = df[df["score"] != 0.0].reset_index(drop=True)
    df["label"] = (df["score"] > 0).astype(np.int64)
    df["score"] = df["score"].astype(np.float32)
    return df[["text", "label", "score"]]


def load_embedded_sentiment(cache_dir: str | Path | None = None, seed: int = 0) -> DataBundle:
    """The default task: binary sentiment of 10,568 movie-review snippets (label 1 = mean score > 0).

    Split with ``numpy.random.default_rng(seed).permutation``: the first 1,000 rows are dev, the next 1,000
    test, the rest (8,568) train, so a seed fully determines the split on every machine.
    """
    df = _parse_vader_snippets(ensure_vader_snippets(cache_dir))
    if len(df) <= EMBEDDED_DEV_SIZE + EMBEDDED_TEST_SIZE:
        raise DataError(f"the embedded data has only {len(df)} labelled rows.", "delete the vader cache and rerun.")
    perm = np.random.default_rng(seed).permutation(len(df))
    dev_idx = perm[:EMBEDDED_DEV_SIZE]
    test_idx = perm[EMBEDDED_DEV_SIZE:EMBEDDED_DEV_SIZE + EMBEDDED_TEST_SIZE]
    train_idx = perm[EMBEDDED_DEV_SIZE + EMBEDDED_TEST_SIZE:]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("int64"), "score": datasets.Value("float32")}
    )

    def split(idx: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_pandas(df.iloc[idx].reset_index(drop=True), features=features,
                                            preserve_index=False)

    return DataBundle(task=EMBEDDED_TASK, train=split(train_idx), dev=split(dev_idx), test=split(test_idx))


# --------------------------------------------------------------------------------------------------------------
# Shared label handling
# --------------------------------------------------------------------------------------------------------------


def _classification_metrics(num_labels: int) -> list[str]:
    return ["accuracy", "f1"] if num_labels == 2 else ["accuracy"]


def _build_split(
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


def _check_no_missing(df: pd.DataFrame, column: str, what: str, where: str) -> None:
    missing = _is_missing(df[column])
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{where}: {int(missing.sum())} row(s) have an empty {what} column '{column}' (first at row {first}).",
            "fill or drop those rows.",
        )


def _require_columns(df: pd.DataFrame, wanted: dict[str, str | None], where: str, fix: str | None = None) -> None:
    """``wanted`` maps the option name (text_column, ...) to the column the user asked for."""
    for option, column in wanted.items():
        if column is not None and column not in df.columns:
            have = ", ".join(str(c) for c in df.columns)
            raise DataError(f"{where} has no column '{column}' (the {option}); its columns are: {have}.",
                            fix or f"set {option} to one of those columns.")


@dataclass
class _LabelScheme:
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


def _infer_scheme(values: pd.Series, task_type: str, where: str) -> _LabelScheme:
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
        return _LabelScheme(regression=True)
    if numeric and not pd.api.types.is_bool_dtype(values.dtype):
        ints = _integer_labels(values, where)
        if ints is None:
            if task_type == "classification":
                raise DataError(f"{where}: labels are non-integer numbers (e.g. {values.iloc[0]!r}), not classes.",
                                "use task_type='regression', or integer or string class labels.")
            return _LabelScheme(regression=True)
        if ints.min() < 0:
            raise DataError(f"{where}: integer class labels must be 0..C-1 but include {int(ints.min())}.",
                            "renumber the classes from 0, or use string labels (mapped in sorted order).")
        num = int(ints.max()) + 1
        if num < 2:
            raise DataError(f"{where}: every label is {int(ints.max())}; a classifier needs at least two classes.",
                            "check the label column (or use task_type='regression').")
        return _LabelScheme(regression=False, num_labels=num)
    if pd.api.types.is_bool_dtype(values.dtype):
        return _LabelScheme(regression=False, num_labels=2)
    names = sorted(set(values.astype(str).str.strip()))
    if len(names) < 2:
        raise DataError(f"{where}: every label is {names[0]!r}; a classifier needs at least two classes.",
                        "check the label column.")
    return _LabelScheme(regression=False, names=names, num_labels=len(names),
                        index={n: i for i, n in enumerate(names)})


# --------------------------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------------------------

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
        raise DataError(f"could not read {split} file {p} as {suffix[1:]}: {_one_line(exc)}.",
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

    The label map is inferred from the *train* file (see :func:`_infer_scheme`) and applied to dev and test, so
    class ids mean the same thing in every split; a dev/test label unknown to train is an error. Without a dev
    file, a seeded ``dev_fraction`` of the train rows becomes dev. The task is named after the train file's stem.
    """
    columns = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column}
    train_df = _read_table(train, "train")
    train_where = f"train file {Path(train)}"
    _require_columns(train_df, columns, train_where)
    scheme = _infer_scheme(_labels_checked(train_df, label_column, train_where), task_type, train_where)

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
        _require_columns(df, columns, where)
        _check_no_missing(df, text_column, "text", where)
        if text_pair_column is not None:
            _check_no_missing(df, text_pair_column, "text pair", where)
        labels = scheme.encode(_labels_checked(df, label_column, where), where, train_where)
        splits[name] = _build_split(df, text_column, text_pair_column, labels, scheme.regression)

    task = TaskSpec(
        name=Path(train).stem,
        text_column="text",
        text_pair_column="text_pair" if text_pair_column is not None else None,
        label_column="label",
        problem_type=REGRESSION if scheme.regression else CLASSIFICATION,
        num_labels=1 if scheme.regression else scheme.num_labels,
        label_names=scheme.names,
        metrics=["pearson", "spearman"] if scheme.regression else _classification_metrics(scheme.num_labels),
    )
    return DataBundle(task=task, train=splits["train"], dev=splits["dev"], test=splits.get("test"))


def _labels_checked(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    _check_no_missing(df, column, "label", where)
    return df[column]


# --------------------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GlueLayout:
    """Where a GLUE task keeps its columns in the original TSVs (Wang et al., 2019 / download_glue_data.py)."""

    text: str
    pair: str | None
    label: str
    label_kind: str  # "int" (0..C-1 in the file), "str" (names in the file), "float" (regression)
    label_names: list[str] | None
    metrics: list[str]
    header: list[str] | None = None  # column names for files without a header row (CoLA)
    dev_files: tuple[str, ...] = ("dev.tsv",)


GLUE_TASKS: dict[str, _GlueLayout] = {
    "cola": _GlueLayout("sentence", None, "label", "int", ["unacceptable", "acceptable"], ["mcc"],
                        header=["source", "label", "orig_label", "sentence"]),
    "sst2": _GlueLayout("sentence", None, "label", "int", ["negative", "positive"], ["accuracy"]),
    "mrpc": _GlueLayout("#1 String", "#2 String", "Quality", "int", ["not_equivalent", "equivalent"],
                        ["f1", "accuracy"]),
    "qqp": _GlueLayout("question1", "question2", "is_duplicate", "int", ["not_duplicate", "duplicate"],
                       ["f1", "accuracy"]),
    "stsb": _GlueLayout("sentence1", "sentence2", "score", "float", None, ["pearson", "spearman"]),
    "mnli": _GlueLayout("sentence1", "sentence2", "gold_label", "str", ["contradiction", "entailment", "neutral"],
                        ["accuracy"], dev_files=("dev_matched.tsv", "dev.tsv")),
    "qnli": _GlueLayout("question", "sentence", "label", "str", ["entailment", "not_entailment"], ["accuracy"]),
    "rte": _GlueLayout("sentence1", "sentence2", "label", "str", ["entailment", "not_entailment"], ["accuracy"]),
    "wnli": _GlueLayout("sentence1", "sentence2", "label", "int", ["not_entailment", "entailment"], ["accuracy"]),
}


def _glue_key(name: str) -> str:
    """'SST-2', 'sst_2', 'sst2' -> 'sst2': GLUE copies differ in how they spell directory names."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_glue_tsv(path: Path, layout: _GlueLayout) -> pd.DataFrame:
    """Read a GLUE TSV verbatim: quoting off (sentences contain unbalanced quotes), every field a string."""
    try:
        df = pd.read_csv(
            path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, na_filter=False,
            encoding="utf-8-sig",  # the MRPC files start with a byte-order mark
            header=None if layout.header else 0, names=layout.header, on_bad_lines="warn",
        )
    except Exception as exc:
        raise DataError(f"could not read {path}: {_one_line(exc)}.", "re-download the GLUE data.") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(f"{path} has no rows.", "re-download the GLUE data.")
    return df


def _find_glue_task_dir(glue_dir: Path, key: str) -> Path:
    if not glue_dir.is_dir():
        raise DataError(f"GLUE directory {glue_dir} does not exist.",
                        "point at the folder that holds CoLA/, SST-2/, MRPC/, ... (e.g. glue_data/).")
    if _glue_key(glue_dir.name) == key and (glue_dir / "train.tsv").is_file():
        return glue_dir  # the task folder itself was given
    for child in sorted(glue_dir.iterdir()):
        if child.is_dir() and _glue_key(child.name) == key:
            return child
    present = ", ".join(sorted(c.name for c in glue_dir.iterdir() if c.is_dir())) or "none"
    raise DataError(f"{glue_dir} has no folder for GLUE task '{key}' (folders present: {present}).",
                    f"download GLUE so that {glue_dir}/<TASK>/train.tsv exists (e.g. {glue_dir}/SST-2/train.tsv).")


def load_glue(glue_dir: str | Path, task: str) -> DataBundle:
    """Load one GLUE task's train and dev splits from the standard directory layout.

    ``test`` is None because GLUE test labels are hidden; use dev for reporting. Metrics follow the GLUE
    leaderboard (CoLA: MCC; MRPC/QQP: F1 then accuracy; STS-B: Pearson then Spearman; others: accuracy).
    """
    key = _glue_key(task)
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task '{task}'.", f"use one of: {', '.join(GLUE_TASKS)}.")
    layout = GLUE_TASKS[key]
    task_dir = _find_glue_task_dir(Path(glue_dir).expanduser(), key)
    train_path = task_dir / "train.tsv"
    dev_path = next((task_dir / f for f in layout.dev_files if (task_dir / f).is_file()), None)
    if not train_path.is_file():
        raise DataError(f"{train_path} does not exist.", f"re-download GLUE {key}; {task_dir} must hold train.tsv.")
    if dev_path is None:
        raise DataError(f"{task_dir} has no {' or '.join(layout.dev_files)}.",
                        f"re-download GLUE {key}; the dev split is needed for evaluation.")

    regression = layout.label_kind == "float"
    index = {n: i for i, n in enumerate(layout.label_names or [])}
    splits: dict[str, datasets.Dataset] = {}
    for name, path in (("train", train_path), ("dev", dev_path)):
        df = _read_glue_tsv(path, layout)
        _require_columns(df, {"text column": layout.text, "text pair column": layout.pair,
                              "label column": layout.label}, str(path),
                         fix=f"give {path.name} the standard GLUE {key} layout (re-download GLUE).")
        raw = df[layout.label].astype(str).str.strip()
        if layout.label_kind == "str":
            labels = raw.map(index)
        else:
            labels = pd.to_numeric(raw, errors="coerce")
            if layout.label_kind == "int":
                labels = labels.where(labels.isin(range(len(index))))
        bad = labels.isna().to_numpy()
        if bad.any():
            values = ", ".join(map(repr, sorted(set(raw[bad]))[:5]))
            expected = "numbers" if regression else (
                ", ".join(layout.label_names) if layout.label_kind == "str" else f"0..{len(index) - 1}")
            raise DataError(f"{path}: {int(bad.sum())} row(s) have label(s) {values}, expected {expected}.",
                            f"re-download GLUE {key} (the file does not have the standard layout).")
        splits[name] = _build_split(df, layout.text, layout.pair, labels.to_numpy(), regression)

    spec = TaskSpec(
        name=key,
        text_column="text",
        text_pair_column="text_pair" if layout.pair else None,
        label_column="label",
        problem_type=REGRESSION if regression else CLASSIFICATION,
        num_labels=1 if regression else len(index),
        label_names=None if regression else list(layout.label_names or []),
        metrics=list(layout.metrics),
    )
    return DataBundle(task=spec, train=splits["train"], dev=splits["dev"], test=None)


# --------------------------------------------------------------------------------------------------------------
# Dispatcher and tokenisation
# --------------------------------------------------------------------------------------------------------------

EMBEDDED_SOURCES = ("embedded", "movie-sentiment")
# load_local's options and their defaults: callers (recipes, CLI) pass them whatever the source is.
_LOCAL_DEFAULTS: dict[str, Any] = {"dev": None, "test": None, "text_column": "text", "text_pair_column": None,
                                   "label_column": "label", "task_type": "auto", "dev_fraction": 0.1}


def _only(kwargs: dict[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """Keep ``allowed`` options; drop local-file options left at their defaults; reject the rest.

    Generic callers pass the local-file options for every source, so defaults must not be an error, but a real
    setting (say ``text_column='review'`` for GLUE) would be silently ignored, so that is one.
    """
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in allowed:
            out[key] = value
        elif key in _LOCAL_DEFAULTS and value == _LOCAL_DEFAULTS[key]:
            continue
        else:
            raise DataError(f"option {key}={value!r} does not apply to {what}.",
                            f"drop it (valid options here: {', '.join(allowed) or 'none'}).")
    return out


def load_data(source: str, **kwargs: Any) -> DataBundle:
    """Load data from a one-string description, as used by recipes and the CLI.

    * ``"embedded"`` / ``"movie-sentiment"`` -> :func:`load_embedded_sentiment` (options: seed, cache_dir);
    * ``"glue:<task>:<glue_dir>"``, ``"glue:<task>"`` with ``glue_dir=``, a task name with ``glue_dir=``, or a GLUE
      directory with ``glue_task=`` -> :func:`load_glue` (``seed`` is ignored: GLUE splits are fixed);
    * anything else is a local train file for :func:`load_local`, which gets the remaining options.
    """
    src = str(source).strip()
    kwargs = dict(kwargs)
    glue_task = kwargs.pop("glue_task", None)
    glue_dir = kwargs.pop("glue_dir", None)
    if src.lower() in EMBEDDED_SOURCES:
        if glue_task or glue_dir:
            raise DataError(f"data source '{src}' is the embedded task, but a GLUE task/directory was also given.",
                            "use 'glue:<task>:<glue_dir>' for GLUE, or drop glue_task/glue_dir.")
        return load_embedded_sentiment(**_only(kwargs, ("seed", "cache_dir"), "the embedded data"))
    if src.lower().startswith("glue:") or src.lower() == "glue" or glue_task or glue_dir:
        if src.lower().startswith("glue:"):
            parts = src.split(":", 2)
            task = parts[1] or glue_task
            glue_dir = (parts[2] if len(parts) == 3 and parts[2] else None) or glue_dir
        elif glue_task:
            task = glue_task
            glue_dir = glue_dir or (None if src.lower() == "glue" else src)
        else:
            task = None if src.lower() == "glue" else src
        if not task:
            raise DataError(f"data source '{src}' does not name a GLUE task.",
                            f"write it as 'glue:<task>:<glue_dir>' (tasks: {', '.join(GLUE_TASKS)}).")
        if not glue_dir:
            raise DataError(f"data source '{src}' does not say where the GLUE data is.",
                            f"write it as 'glue:{task}:<glue_dir>' or pass glue_dir=.")
        _only({k: v for k, v in kwargs.items() if k != "seed"}, (), "GLUE data")
        return load_glue(glue_dir, task)
    path = Path(src).expanduser()
    if not path.exists() and _glue_key(src) in GLUE_TASKS:
        raise DataError(f"data source '{src}' looks like a GLUE task but no GLUE directory was given.",
                        f"use 'glue:{src}:<glue_dir>'.")
    if not path.exists():
        raise DataError(f"data source '{src}' is not an existing file, 'embedded' or 'glue:<task>:<dir>'.",
                        "check the path, or use one of those forms.")
    return load_local(src, **_only(kwargs, tuple(_LOCAL_DEFAULTS) + ("seed",), "local files"))


MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def tokenize_bundle(bundle: DataBundle, tokenizer: Any, max_length: int) -> DataBundle:
    """Tokenise every split into ``input_ids``, ``attention_mask`` (+ ``token_type_ids``) and ``labels``.

    Sequences are truncated to ``max_length`` but not padded: the collator pads each batch to its own longest
    sequence, which is much cheaper than padding everything to ``max_length``. All other columns (text, score)
    are dropped so the collator and the model's ``forward`` only see what they accept.
    """
    if int(max_length) < 2:
        raise DataError(f"max_length={max_length} leaves no room for any token.", "use max_length >= 8 (e.g. 128).")
    spec = bundle.task
    pair = spec.text_pair_column

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        enc = tokenizer(batch[spec.text_column], batch[pair] if pair else None, truncation=True,
                        max_length=int(max_length))
        out = {k: enc[k] for k in MODEL_INPUT_COLUMNS if k in enc}
        out["labels"] = batch[spec.label_column]
        return out

    def run(ds: datasets.Dataset | None, name: str) -> datasets.Dataset | None:
        if ds is None:
            return None
        needed = [c for c in (spec.text_column, pair, spec.label_column) if c is not None]
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise DataError(f"the {name} split lacks column(s) {', '.join(missing)}; its columns are: "
                            f"{', '.join(ds.column_names)}.", "tokenize a bundle made by pruneformer.data loaders.")
        if len(ds) == 0:
            raise DataError(f"the {name} split is empty.", "check the data source and any subsampling limits.")
        out = ds.map(encode, batched=True, remove_columns=ds.column_names,
                     new_fingerprint=generate_random_fingerprint(),
                     desc=f"Tokenizing {name}")
        label_type = "float32" if spec.is_regression else "int64"
        if out.features["labels"].dtype != label_type:
            out = out.cast_column("labels", datasets.Value(label_type))
        return out

    return DataBundle(task=spec, train=run(bundle.train, "train"), dev=run(bundle.dev, "dev"),
                      test=run(bundle.test, "test"))
