"""Per-layer sparsity and pattern checks of a model's targets (``pruneformer inspect``)."""

from __future__ import annotations

from typing import Any

import torch

from .patterns import Pattern
from .targets import Target


@torch.no_grad()
def layer_sparsity(targets: list[Target], pattern: Pattern | None) -> list[dict[str, Any]]:
    """One row per target: shape, sparsity and, when a pattern is given, whether it is satisfied."""
    rows = []
    for target in targets:
        weight = target.linear_weight
        row: dict[str, Any] = {
            "layer": target.name,
            "role": target.role,
            "shape": list(weight.shape),
            "sparsity": float((weight == 0).float().mean()),
        }
        if pattern is not None and not pattern.is_global:
            stats = pattern.group_stats(weight)
            row["satisfies_pattern"] = bool(stats["violating_groups"] == 0)
            row["violating_groups"] = int(stats["violating_groups"])
        rows.append(row)
    return rows


def overall_sparsity(rows: list[dict[str, Any]]) -> float:
    """Parameter-weighted sparsity over all rows."""
    total = sum(r["shape"][0] * r["shape"][1] for r in rows)
    zeros = sum(r["sparsity"] * r["shape"][0] * r["shape"][1] for r in rows)
    return zeros / total if total else 0.0
