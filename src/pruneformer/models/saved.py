"""Saving and loading pruned models in the Hugging Face layout (safetensors), with their pattern.

A pruned model is an ordinary ``save_pretrained`` directory: plain ``transformers`` loads it. The pattern,
method and targeted layers are recorded twice: in ``config.json`` under ``pruneformer`` (travels with the
model) and in ``pruning.json`` beside it (easy to read without loading anything).

A physically shrunk model (:mod:`compress`) is saved the same way by :func:`save_shrunk_model`, which also
copies :mod:`compress.modeling_shrunk_bert` beside the weights, with ``auto_map`` in ``config.json``
pointing at it. Anyone can then load it with no pruneformer installed::

    AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)

Inside pruneformer the same classes are registered with the Auto classes (:func:`register_auto_classes`),
so :func:`load_pruned_model` (and ``pruneformer eval`` / ``inspect``) loads dense, masked and shrunk models
alike, with no remote code at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress import modeling_shrunk, modeling_shrunk_bert
from ..compress.modeling_shrunk import ShrunkConfig, ShrunkModel
from ..compress.modeling_shrunk_bert import ShrunkBertConfig, ShrunkBertForSequenceClassification, ShrunkBertModel
from ..errors import CheckpointError, ModelError
from ..version import __version__
from .loading import read_model_type, resolve_model_path, task_classes, weight_loading_kwargs

PRUNING_FILE = "pruning.json"
MODELING_FILE = Path(modeling_shrunk_bert.__file__).name
AUTO_MAP = {
    "AutoConfig": "modeling_shrunk_bert.ShrunkBertConfig",
    "AutoModel": "modeling_shrunk_bert.ShrunkBertModel",
    "AutoModelForSequenceClassification": "modeling_shrunk_bert.ShrunkBertForSequenceClassification",
}


#: The auto classes a generic shrunk model (``compress.modeling_shrunk``) is registered with.
SHRUNK_TASKS = ("AutoModel", "AutoModelForSequenceClassification", "AutoModelForImageClassification",
                "AutoModelForCausalLM")


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModel*`` resolve ``shrunk-bert`` and ``pruneformer-shrunk`` to pruneformer's
    copy of the classes."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    AutoConfig.register(ShrunkBertConfig.model_type, ShrunkBertConfig, exist_ok=True)
    AutoModel.register(ShrunkBertConfig, ShrunkBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(ShrunkBertConfig, ShrunkBertForSequenceClassification, exist_ok=True)
    AutoConfig.register(ShrunkConfig.model_type, ShrunkConfig, exist_ok=True)
    for task in SHRUNK_TASKS:
        getattr(transformers, task).register(ShrunkConfig, ShrunkModel, exist_ok=True)


register_auto_classes()  # physically shrunk models load with pruneformer's own classes


def save_pruned_model(model: nn.Module, tokenizer: Any, directory: str | Path, info: dict[str, Any]) -> Path:
    """Write model (safetensors), tokenizer and pruning metadata to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"pruneformer_version": __version__, **info}
    model.config.pruneformer = {k: record[k] for k in ("pattern", "method", "targets") if k in record}
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    (directory / PRUNING_FILE).write_text(json.dumps(record, indent=2))
    return directory


def save_shrunk_model(model: nn.Module, tokenizer: Any, directory: str | Path, info: dict[str, Any]) -> Path:
    """Save a shrunk model (``compress.shrink_model``'s) with its modeling file and pruning record."""
    if isinstance(model.config, ShrunkBertConfig):
        model.config.auto_map = dict(AUTO_MAP)
        source = modeling_shrunk_bert.__file__
    elif isinstance(model.config, ShrunkConfig):
        name = Path(modeling_shrunk.__file__).stem
        model.config.auto_map = {"AutoConfig": f"{name}.ShrunkConfig", model.config.task: f"{name}.ShrunkModel"}
        source = modeling_shrunk.__file__
    else:
        raise TypeError("save_shrunk_model expects a shrunk model (see compress.shrink_model)")
    directory = save_pruned_model(model, tokenizer, directory, info)
    shutil.copyfile(source, directory / Path(source).name)
    return directory


def read_pruning_info(directory: str | Path) -> dict[str, Any] | None:
    """The pruning record of a saved model, or None for a model pruneformer did not prune."""
    path = Path(directory) / PRUNING_FILE
    if path.is_file():
        return json.loads(path.read_text())
    config = Path(directory) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("pruneformer")
    return None


def load_pruned_model(directory: str | Path, trust_pickle: bool = False) -> tuple[nn.Module, Any, dict[str, Any] | None]:
    """Load a saved (pruned, shrunk or dense) classifier, its tokenizer and its pruning record, offline.

    Safetensors only: pickle-based weights are refused unless ``trust_pickle`` (``--trust-pickle``).
    """
    path = resolve_model_path(directory)
    auto_model, auto_preprocessor = task_classes(read_model_type(path))
    weights = weight_loading_kwargs(path, trust_pickle)
    if weights["use_safetensors"] and not any(path.glob("*.safetensors")):
        raise ModelError(f"{path} has no .safetensors weights.",
                         "pruneformer loads safetensors only; re-save the model with save_pretrained()")
    try:
        model = auto_model.from_pretrained(path, local_files_only=True, dtype=torch.float32, **weights)
        tokenizer = auto_preprocessor.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and transformers raise many kinds
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"Cannot load the model in {path}: {first}",
                              "the files are corrupt or incomplete; save or copy the model again") from exc
    return model, tokenizer, read_pruning_info(path)
