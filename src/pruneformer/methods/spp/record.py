"""SPP's path record: when every paired unit entered the solution path, saved beside the model.

One search gives one record; any number of pruned models are cut from it afterwards without rerunning
the search. The record is one small safetensors file (``spp_path.safetensors``): the entry step of each
unit (``-1``: never entered), its final z (the tie-break: among units that did not enter, a larger z is
closer to entering), gamma at the recorded steps (for the path plot) and, in the metadata, the settings
and a **fingerprint** of the encoder weights the search ran on, so a record is never applied to another
model (a different checkpoint, or the same architecture fine-tuned again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ...core.structure import GROUPS
from ...core.targets import all_targets
from ...errors import CheckpointError
from .cut import keep_top

if TYPE_CHECKING:
    from .search import SPPSearch

PATH_FILE = "spp_path.safetensors"


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of every encoder Linear (names, shapes, values): equal iff the record fits this model."""
    digest = hashlib.sha256()
    for target in all_targets(model):
        for name, tensor in (("weight", target.module.weight), ("bias", target.module.bias)):
            if tensor is None:
                continue
            data = tensor.detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{target.name}.{name}:{tuple(data.shape)}".encode())
            digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass
class PathRecord:
    """Entry time of every unit by group (``qk``/``vo``: [layers, heads, dim] or [layers, dim]; ``ffn``:
    [layers, units]) plus what the plot and the fingerprint check need."""

    granularity: str
    layers: list[int]
    num_heads: int
    entry: dict[str, torch.Tensor]
    score: dict[str, torch.Tensor]
    fingerprint: str
    steps: int
    path_steps: list[int] = field(default_factory=list)
    gamma_path: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_search(cls, search: SPPSearch, fingerprint: str) -> PathRecord:
        """The record of a finished search: entry steps (and z, the tie-break of units that did not enter) of
        every unit by group, gamma at each snapshot, and the settings; ``fingerprint`` names the model."""
        snapshots = [search.by_group(gamma) for _, gamma in search.snapshots]
        return cls(
            granularity=search.granularity, layers=[layer.index for layer in search.layers],
            num_heads=search.layers[0].num_heads, entry=search.by_group(search.lbi.entry),
            score={g: z.float() for g, z in search.by_group(search.lbi.z).items()},
            path_steps=[step for step, _ in search.snapshots],
            gamma_path={g: torch.stack([snap[g] for snap in snapshots]) for g in GROUPS},
            fingerprint=fingerprint, steps=search.lbi.steps, settings=search.search_settings(),
        )

    def priority(self) -> dict[str, torch.Tensor]:
        """A score per unit, higher = earlier on the path: entered units by entry step, then the rest by z."""
        result = {}
        for group in GROUPS:
            entry, z = self.entry[group].flatten(), self.score[group].flatten()
            by_z = torch.argsort(z, descending=True, stable=True)
            key = torch.where(entry[by_z] >= 0, entry[by_z], torch.iinfo(torch.long).max)
            order = by_z[torch.argsort(key, stable=True)]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel())
            result[group] = (order.numel() - rank).view_as(self.entry[group]).float()
        return result

    def keep(self, ratio: float) -> dict[str, torch.Tensor]:
        """Boolean keep-masks at a removal ratio: per group, the units that entered the path earliest."""
        return keep_top(self.priority(), ratio)

    def check_model(self, model: nn.Module, source: str = "this model") -> None:
        found = model_fingerprint(model)
        if found != self.fingerprint:
            raise CheckpointError(
                f"The SPP path record was made on another model (fingerprint {self.fingerprint}, {source} has {found}).",
                "extract from the model directory the search saved beside its record, or run the search again")

    # -- files -----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / PATH_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"entry.{g}": self.entry[g].contiguous() for g in GROUPS}
        tensors |= {f"score.{g}": self.score[g].contiguous() for g in GROUPS}
        tensors |= {f"gamma_path.{g}": v.contiguous() for g, v in self.gamma_path.items()}
        meta = {"granularity": self.granularity, "layers": self.layers, "num_heads": self.num_heads,
                "fingerprint": self.fingerprint, "steps": self.steps, "path_steps": self.path_steps,
                "settings": self.settings}
        save_file(tensors, str(path), metadata={"spp": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "PathRecord":
        path = Path(directory)
        path = path / PATH_FILE if path.is_dir() else path
        if not path.is_file():
            raise CheckpointError(f"No SPP path record at {path}.",
                                  "run `pruneformer spp-search` first and pass its output directory")
        try:
            with safe_open(str(path), "pt") as handle:
                meta = json.loads((handle.metadata() or {})["spp"])
            tensors = load_file(str(path))
            entry = {g: tensors[f"entry.{g}"] for g in GROUPS}
            score = {g: tensors[f"score.{g}"] for g in GROUPS}
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable SPP path record ({type(exc).__name__}).",
                                  "run the search again to rewrite it") from exc
        gamma_path = {g: tensors[f"gamma_path.{g}"] for g in GROUPS if f"gamma_path.{g}" in tensors}
        return cls(granularity=meta["granularity"], layers=list(meta["layers"]), num_heads=int(meta["num_heads"]),
                   entry=entry, score=score, fingerprint=meta["fingerprint"], steps=int(meta["steps"]),
                   path_steps=list(meta["path_steps"]), gamma_path=gamma_path, settings=meta["settings"])
