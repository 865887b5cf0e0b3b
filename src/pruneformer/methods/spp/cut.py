"""Where a solution path is cut: the removal ratio a user asks for, and the rule that turns a path's scores
into kept units (what ``pruneformer compare`` validates a candidate's ratios with, before any training)."""

from __future__ import annotations

import math

import torch

from ...errors import RecipeError


def check_ratio(ratio: float) -> float:
    """A removal ratio must lie in [0, 1): 1 would remove every unit, leaving no product to keep."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio < 1.0):
        raise RecipeError(f"Ratio {ratio} is outside [0, 1).",
                          "give the fraction of paired inner dimensions to remove, e.g. --ratio 0.3 0.5")
    return float(ratio)


def keep_top(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Per group, globally over layers: remove round(ratio * units) units with the lowest score."""
    check_ratio(ratio)
    keep = {}
    for group, score in scores.items():
        flat = score.flatten()
        removed = int(math.floor(ratio * flat.numel() + 0.5))
        order = torch.argsort(flat, descending=True, stable=True)
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[order[: flat.numel() - removed]] = True
        keep[group] = mask.view_as(score)
    return keep
