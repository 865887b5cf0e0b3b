"""Atomic training checkpoints: model, optimizer, scheduler, method state, RNG and data position.

A checkpoint is a directory written under a temporary name and renamed into place, so a run killed
mid-write leaves the previous checkpoint intact. Everything is safetensors (tensors) plus JSON (the rest):
no pickle is written or read. Nested states (the optimizer's, a method's) are split by :func:`split_tensors`
into a safetensors file and a JSON skeleton that :func:`join_tensors` puts back together. A checkpoint from
an older pruneformer that still holds a pickle-based ``optimizer.pt`` is refused unless the caller trusts it
(``trust_pickle=True``, ``--trust-pickle``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from ..errors import CheckpointError

_SEP = "::"
LEGACY_OPTIMIZER = "optimizer.pt"


def split_tensors(tree: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into safetensors-ready tensors (keyed by their path) and a JSON-ready skeleton.

    Dicts with non-string keys (the optimizer's per-parameter state) and tuples (Adam's betas) are kept as
    such in the skeleton, so :func:`join_tensors` returns exactly what ``load_state_dict`` expects.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        def at(key: Any) -> str:
            return f"{path}{_SEP}{key}" if path else str(key)

        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().contiguous().cpu()
            return {"__tensor__": path}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node):
                return {k: walk(v, at(k)) for k, v in node.items()}
            return {"__items__": [[k, walk(v, at(k))] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, at(i)) for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, at(i)) for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store a {type(node).__name__} at '{path}' without pickle")

    return tensors, walk(tree, "")


def join_tensors(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`split_tensors`. Tensors the skeleton does not name (method files written before
    skeletons existed) go back in by their key, ``outer::inner`` one level deep."""
    used: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"__tensor__"}:
                used.add(node["__tensor__"])
                return tensors[node["__tensor__"]]
            if set(node) == {"__items__"}:
                return {k: walk(v) for k, v in node["__items__"]}
            if set(node) == {"__tuple__"}:
                return tuple(walk(v) for v in node["__tuple__"])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    state = walk(skeleton)
    for key in tensors.keys() - used:
        outer, _, inner = key.partition(_SEP)
        if inner:
            state.setdefault(outer, {})[inner] = tensors[key]
        else:
            state[key] = tensors[key]
    return state


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    method_state: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    rng_states: Sequence[torch.Tensor] | None = None,
) -> None:
    """Write ``directory`` atomically (``directory.old`` holds the previous one during the swap).

    ``rng_states`` holds every rank's CPU RNG state in a multi-process run (default: this process's).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".tmp-", dir=directory.parent))
    save_model(model, str(tmp / "model.safetensors"))
    opt_tensors, opt_skeleton = split_tensors({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    tensors, skeleton = split_tensors(method_state or {})
    save_file(tensors, str(tmp / "method.safetensors"))
    rng = list(rng_states) if rng_states else [torch.get_rng_state()]
    save_file({_rng_key(rank): state for rank, state in enumerate(rng)}, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"trainer": trainer_state, "method": skeleton, "optimizer": opt_skeleton}))
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


def _rng_key(rank: int) -> str:
    return "torch_rng" if rank == 0 else f"torch_rng{_SEP}rank{rank}"


def load_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    *, rank: int = 0, trust_pickle: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model, optimizer, scheduler and this rank's RNG; return (method_state, trainer_state)."""
    directory = Path(directory)
    legacy = not (directory / "optimizer.safetensors").is_file() and (directory / LEGACY_OPTIMIZER).is_file()
    if legacy and not trust_pickle:
        raise CheckpointError(
            f"Checkpoint {directory} holds {LEGACY_OPTIMIZER}, a pickle-based file (written by an older pruneformer); "
            "pickle can run code when loaded, so it is refused.",
            "pass --trust-pickle (API: trust_pickle=True) if you trust where it came from, or delete the checkpoint "
            "to restart that phase",
        )
    try:
        load_model(model, str(directory / "model.safetensors"))
        meta = json.loads((directory / "state.json").read_text())
        if legacy:  # trusted by the caller; weights_only still refuses arbitrary objects
            opt = torch.load(directory / LEGACY_OPTIMIZER, weights_only=True)
        else:
            opt = join_tensors(load_file(str(directory / "optimizer.safetensors")), meta["optimizer"])
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        rng = load_file(str(directory / "rng.safetensors"))
        torch.set_rng_state(rng.get(_rng_key(rank), rng["torch_rng"]))
        method_state = join_tensors(load_file(str(directory / "method.safetensors")), meta["method"])
    except Exception as exc:  # noqa: BLE001 - any failure here means the files are unusable
        raise CheckpointError(
            f"Checkpoint {directory} is corrupt or from another run ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
            "delete it to start that phase again, or point --output-dir at the run that wrote it",
        ) from exc
    return method_state, meta["trainer"]
