"""Saving and loading shrunk models so that plain transformers can load them too.

``save_shrunk_model`` writes the usual Hugging Face layout (safetensors, config, tokenizer, ``pruning.json``)
and copies :mod:`modeling_shrunk_bert` beside the weights, with ``auto_map`` in ``config.json`` pointing at
it. Anyone can then load the model with no pruneformer installed::

    AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)

Inside pruneformer the same classes are registered with the Auto classes, so ``load_shrunk_model`` (and
``pruneformer eval`` / ``inspect``) need no remote code at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from ..io import load_pruned_model, save_pruned_model
from . import modeling_shrunk_bert
from .modeling_shrunk_bert import ShrunkBertConfig, ShrunkBertForSequenceClassification, ShrunkBertModel

MODELING_FILE = Path(modeling_shrunk_bert.__file__).name
AUTO_MAP = {
    "AutoConfig": "modeling_shrunk_bert.ShrunkBertConfig",
    "AutoModel": "modeling_shrunk_bert.ShrunkBertModel",
    "AutoModelForSequenceClassification": "modeling_shrunk_bert.ShrunkBertForSequenceClassification",
}


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModel*`` resolve ``shrunk-bert`` to pruneformer's copy of the classes."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    AutoConfig.register(ShrunkBertConfig.model_type, ShrunkBertConfig, exist_ok=True)
    AutoModel.register(ShrunkBertConfig, ShrunkBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(ShrunkBertConfig, ShrunkBertForSequenceClassification, exist_ok=True)


def save_shrunk_model(model: nn.Module, tokenizer: Any, directory: str | Path, info: dict[str, Any]) -> Path:
    """Save a :class:`ShrunkBertForSequenceClassification` with its modeling file and pruning record."""
    if not isinstance(model.config, ShrunkBertConfig):
        raise TypeError("save_shrunk_model expects a shrunk model (see compress.slicing.shrink_model)")
    model.config.auto_map = dict(AUTO_MAP)
    directory = save_pruned_model(model, tokenizer, directory, info)
    shutil.copyfile(modeling_shrunk_bert.__file__, directory / MODELING_FILE)
    return directory


def load_shrunk_model(directory: str | Path):
    """(model, tokenizer, pruning record) of a saved shrunk model, loaded with pruneformer's classes."""
    return load_pruned_model(directory)
