"""The structured baseline: one-shot L1-magnitude pruning of whole attention heads and FFN units.

A head's importance is the L1 norm of its query, key and value rows and its attention-output columns; an
FFN unit's is the L1 norm of its FFN-in row and FFN-out column. Heads and units are ranked globally (over
all layers), and the same share of each is kept, ``floor(target * count)``, so the kept fraction of encoder
weights is the target or a hair below it. Each layer's FFN unit count is then rounded to a multiple of
``align`` (default 16, as MLPruning does; odd widths run far slower, see :mod:`.mlpruning`), trimming the
least important aligned slices until the total is back within the target. Retraining (with the mask
fixed, or equivalently on the physically shrunk model) is the pipeline's job.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.structure import LayerPlan, ShrinkSchedule, check_compressible
from ..core.targets import Target
from ..families import family_of
from .mlpruning import aligned_count, kept_indices
from .shrinking import ShrinkingMethod


class L1StructuredPruner(ShrinkingMethod):
    """Keep the largest-L1 heads and FFN units, the same share of each, over all layers."""

    name: ClassVar[str] = "l1-structured"

    trains: ClassVar[bool] = False

    @staticmethod
    def check_model(model: nn.Module, recipe: object) -> None:
        """Fail before any training when the model cannot be physically shrunk."""
        check_compressible(model)

    @staticmethod
    def shrink_schedule(recipe: Any) -> ShrinkSchedule:
        """One-shot choice, then the whole budget retraining the shrunk model."""
        return ShrinkSchedule("one-shot", 0.0, retrain_epochs=recipe.prune.epochs)

    @classmethod
    def from_config(cls, recipe: Any, masks: Any = None, steps: int = 0) -> "L1StructuredPruner":
        return cls(recipe.mlpruning.target, align=recipe.mlpruning.align)

    def __init__(self, target: float, align: int = 16) -> None:
        if not 0 < target <= 1:
            raise ValueError("target must be in (0, 1]")
        if align < 1:
            raise ValueError("align must be at least 1")
        self.align = int(align)
        self.pattern = None
        self.targets: list[Target] = []
        self.history: list[dict] = []
        self.target_fraction = float(target)
        self.final_masks: dict[str, torch.Tensor] = {}
        self.importance: dict[str, torch.Tensor] = {}
        self.groups = 1  # query heads per key-value head (set by attach)

    @torch.no_grad()
    def attach(self, model: nn.Module, targets: list[Target]) -> None:  # type: ignore[override]
        self.model, self.targets = model, list(targets)
        # heads by key-value group (grouped-query attention); a gated FFN's gate rows count with its units
        family = family_of(model)
        groups = family.num_kv_heads(model.config)
        self.groups = family.num_heads(model.config) // groups
        by_layer: dict[int, dict[str, torch.Tensor]] = {}
        for t in self.targets:
            by_layer.setdefault(t.layer, {})[t.role] = t.module.weight.abs()
        for layer, w in sorted(by_layer.items()):
            heads = (w["query"].sum(1).view(groups, -1).sum(1) + w["key"].sum(1).view(groups, -1).sum(1)
                     + w["value"].sum(1).view(groups, -1).sum(1) + w["attn_out"].sum(0).view(groups, -1).sum(1))
            self.importance[f"layer{layer}.heads"] = heads
            self.importance[f"layer{layer}.ffn_units"] = (w["ffn_in"].sum(1) + w["ffn_out"].sum(0)
                                                          + (w["ffn_gate"].sum(1) if "ffn_gate" in w else 0))

    def budgets(self) -> dict[str, int]:
        """How many heads and FFN units to keep over all layers: the target share of each."""
        return {kind: math.floor(self.target_fraction * sum(v.numel() for k, v in self.importance.items()
                                                            if k.endswith(kind)) + 1e-9)
                for kind in ("heads", "ffn_units")}

    @torch.no_grad()
    def finalize(self) -> dict[str, torch.Tensor]:
        budgets = self.budgets()
        for kind in ("heads", "ffn_units"):
            keys = [k for k in self.importance if k.endswith(kind)]
            flat = torch.cat([self.importance[k] for k in keys])
            keep = torch.zeros_like(flat, dtype=torch.bool)
            budget = budgets[kind]
            keep[flat.topk(budget).indices] = True
            parts = dict(zip(keys, keep.split([self.importance[k].numel() for k in keys])))
            if kind == "ffn_units" and self.align > 1:
                parts = aligned_masks({k: self.importance[k] for k in keys}, parts, self.align, budget)
            self.final_masks.update(parts)
        masks = {}
        for t in self.targets:
            heads = self.final_masks[f"layer{t.layer}.heads"]
            width = (t.shape[1] if t.role == "attn_out" else t.shape[0]) // heads.numel()
            head = heads.repeat_interleave(width)
            units = self.final_masks[f"layer{t.layer}.ffn_units"]
            unit = head if t.role in ("query", "key", "value", "attn_out") else units
            along_rows = t.role in ("query", "key", "value", "ffn_in", "ffn_gate")
            mask = (unit[:, None] if along_rows else unit[None, :]).expand(t.shape).clone()
            t.module.weight.mul_(mask)
            masks[t.name] = mask
        return masks

    def layer_plans(self, num_layers: int, round_to: int | None = None) -> list[LayerPlan]:
        """What each layer keeps, for :func:`compress.shrink_model` (after ``finalize``)."""
        def heads(layer: int) -> list[int] | None:
            kept = kept_indices(self.final_masks[f"layer{layer}.heads"], self.importance[f"layer{layer}.heads"], None)
            return None if kept is None else [g * self.groups + j for g in kept for j in range(self.groups)]

        return [LayerPlan(heads=heads(l),
                          ffn_units=kept_indices(self.final_masks[f"layer{l}.ffn_units"],
                                                 self.importance[f"layer{l}.ffn_units"], round_to))
                for l in range(num_layers)]

    def kept_summary(self) -> list[dict[str, int]]:
        layers = sorted({int(k.split(".")[0][5:]) for k in self.final_masks})
        return [{"layer": l, "heads": int(self.final_masks[f"layer{l}.heads"].sum()),
                 "ffn_units": int(self.final_masks[f"layer{l}.ffn_units"].sum())} for l in layers]


def aligned_masks(importance: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], align: int,
                  budget: int) -> dict[str, torch.Tensor]:
    """Per-layer kept counts rounded to the nearest multiple of ``align`` (at least ``align``), then, while the
    total exceeds ``budget``, the layer whose last aligned slice is least important gives that slice up."""
    ranked = {k: imp.argsort(descending=True) for k, imp in importance.items()}
    counts = {k: aligned_count(int(masks[k].sum()), imp.numel(), align) for k, imp in importance.items()}

    def last_slice(key: str) -> float:
        if counts[key] <= align:
            return float("inf")
        return float(importance[key][ranked[key][counts[key] - align:counts[key]]].sum())

    while sum(counts.values()) > budget:
        key = min(counts, key=last_slice)
        if last_slice(key) == float("inf"):
            break
        counts[key] -= align
    out = {}
    for key, order in ranked.items():
        mask = torch.zeros_like(masks[key], dtype=torch.bool)
        mask[order[:counts[key]]] = True
        out[key] = mask
    return out
