"""GLUE: one task of a directory in the standard ``glue_data/<TASK>/{train,dev}.tsv`` layout."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd

from ..errors import DataError, brief
from .bundle import CLASSIFICATION, REGRESSION, DataBundle, TaskSpec
from .labels import build_split, require_columns


@dataclass(frozen=True)
class GlueLayout:
    """Where a GLUE task keeps its columns in the original TSVs (Wang et al., 2019 / download_glue_data.py)."""

    text: str
    pair: str | None
    label: str
    label_kind: str  # "int" (0..C-1 in the file), "str" (names in the file), "float" (regression)
    label_names: list[str] | None
    metrics: list[str]
    header: list[str] | None = None  # column names for files without a header row (CoLA)
    dev_files: tuple[str, ...] = ("dev.tsv",)


GLUE_TASKS: dict[str, GlueLayout] = {
    "cola": GlueLayout("sentence", None, "label", "int", ["unacceptable", "acceptable"], ["mcc"],
                        header=["source", "label", "orig_label", "sentence"]),
    "sst2": GlueLayout("sentence", None, "label", "int", ["negative", "positive"], ["accuracy"]),
    "mrpc": GlueLayout("#1 String", "#2 String", "Quality", "int", ["not_equivalent", "equivalent"],
                        ["f1", "accuracy"]),
    "qqp": GlueLayout("question1", "question2", "is_duplicate", "int", ["not_duplicate", "duplicate"],
                       ["f1", "accuracy"]),
    "stsb": GlueLayout("sentence1", "sentence2", "score", "float", None, ["pearson", "spearman"]),
    "mnli": GlueLayout("sentence1", "sentence2", "gold_label", "str", ["contradiction", "entailment", "neutral"],
                        ["accuracy"], dev_files=("dev_matched.tsv", "dev.tsv")),
    "qnli": GlueLayout("question", "sentence", "label", "str", ["entailment", "not_entailment"], ["accuracy"]),
    "rte": GlueLayout("sentence1", "sentence2", "label", "str", ["entailment", "not_entailment"], ["accuracy"]),
    "wnli": GlueLayout("sentence1", "sentence2", "label", "int", ["not_entailment", "entailment"], ["accuracy"]),
}


def glue_key(name: str) -> str:
    """'SST-2', 'sst_2', 'sst2' -> 'sst2': GLUE copies differ in how they spell directory names."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_glue_tsv(path: Path, layout: GlueLayout) -> pd.DataFrame:
    """Read a GLUE TSV verbatim: quoting off (sentences contain unbalanced quotes), every field a string."""
    try:
        df = pd.read_csv(
            path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, na_filter=False,
            encoding="utf-8-sig",  # the MRPC files start with a byte-order mark
            header=None if layout.header else 0, names=layout.header, on_bad_lines="warn",
        )
    except Exception as exc:
        raise DataError(f"could not read {path}: {brief(exc)}.", "re-download the GLUE data.") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(f"{path} has no rows.", "re-download the GLUE data.")
    return df


def _find_glue_task_dir(glue_dir: Path, key: str) -> Path:
    if not glue_dir.is_dir():
        raise DataError(f"GLUE directory {glue_dir} does not exist.",
                        "point at the folder that holds CoLA/, SST-2/, MRPC/, ... (e.g. glue_data/).")
    if glue_key(glue_dir.name) == key and (glue_dir / "train.tsv").is_file():
        return glue_dir  # the task folder itself was given
    for child in sorted(glue_dir.iterdir()):
        if child.is_dir() and glue_key(child.name) == key:
            return child
    present = ", ".join(sorted(c.name for c in glue_dir.iterdir() if c.is_dir())) or "none"
    raise DataError(f"{glue_dir} has no folder for GLUE task '{key}' (folders present: {present}).",
                    f"download GLUE so that {glue_dir}/<TASK>/train.tsv exists (e.g. {glue_dir}/SST-2/train.tsv).")


def load_glue(glue_dir: str | Path, task: str) -> DataBundle:
    """Load one GLUE task's train and dev splits from the standard directory layout.

    ``test`` is None because GLUE test labels are hidden; use dev for reporting. Metrics follow the GLUE
    leaderboard (CoLA: MCC; MRPC/QQP: F1 then accuracy; STS-B: Pearson then Spearman; others: accuracy).
    """
    key = glue_key(task)
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
        require_columns(df, {"text column": layout.text, "text pair column": layout.pair,
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
        splits[name] = build_split(df, layout.text, layout.pair, labels.to_numpy(), regression)

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
