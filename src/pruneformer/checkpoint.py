"""Atomic training checkpoints: model, optimizer, scheduler, method state, RNG and data position.

A checkpoint is a directory written under a temporary name and renamed into place, so a run killed
mid-write leaves the previous checkpoint intact. Tensors go to safetensors; the optimizer state is
read back with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from .errors import CheckpointError

_SEP = "::"


def flatten_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested state dict into safetensors-ready tensors and JSON-ready values."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().contiguous().cpu()
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            for sub, tensor in value.items():
                tensors[f"{key}{_SEP}{sub}"] = tensor.detach().contiguous().cpu()
        else:
            plain[key] = value
    return tensors, plain


def unflatten_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = dict(plain)
    for key, tensor in tensors.items():
        if _SEP in key:
            outer, inner = key.split(_SEP, 1)
            state.setdefault(outer, {})[inner] = tensor
        else:
            state[key] = tensor
    return state


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    method_state: dict[str, Any] | None,
    trainer_state: dict[str, Any],
) -> None:
    """Write ``directory`` atomically (``directory.old`` holds the previous one during the swap)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".tmp-", dir=directory.parent))
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    tensors, plain = flatten_state(method_state or {})
    save_file(tensors, str(tmp / "method.safetensors"))
    save_file({"torch_rng": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"trainer": trainer_state, "method": plain}))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)


def find_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint at ``directory`` (or its ``.old`` twin after a crash mid-swap)."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNG; return (method_state, trainer_state)."""
    try:
        load_model(model, str(directory / "model.safetensors"))
        opt = torch.load(directory / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        torch.set_rng_state(load_file(str(directory / "rng.safetensors"))["torch_rng"])
        meta = json.loads((directory / "state.json").read_text())
        method_state = unflatten_state(load_file(str(directory / "method.safetensors")), meta["method"])
    except Exception as exc:  # noqa: BLE001 - any failure here means the files are unusable
        raise CheckpointError(
            f"Checkpoint {directory} is corrupt or from another run ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
            "delete it to start that phase again, or point --output-dir at the run that wrote it",
        ) from exc
    return method_state, meta["trainer"]
