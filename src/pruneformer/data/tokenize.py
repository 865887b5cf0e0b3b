"""Tokenising a bundle for the model: ids and masks, labels in the task's dtype, nothing else."""

from __future__ import annotations

from typing import Any

import datasets
from datasets.fingerprint import generate_random_fingerprint

from ..errors import DataError
from .bundle import DataBundle

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
