"""Per-layer sparsity and pattern checks of a model's targets (``pruneformer inspect``)."""

from __future__ import annotations

from typing import Any

import torch

from .patterns import Pattern
from .targets import Target


def layer_sparsity(targets: list[Target], pattern: Pattern | None) -> list[dict[str, Any]]:
    """One row per target: shape, sparsity and, when a pattern is given, whether it is satisfied."""
    return weight_sparsity([(t.name, t.role, t.linear_weight) for t in targets], pattern)


@torch.no_grad()
def weight_sparsity(weights: list[tuple[str, str, torch.Tensor]], pattern: Pattern | None) -> list[dict[str, Any]]:
    """:func:`layer_sparsity` of ``(layer, role, weight [out, in])`` rows: a model's targets or the weights
    of an exported graph (:func:`pruneformer.deploy.runtime.exported_weights`)."""
    rows = []
    for name, role, weight in weights:
        row: dict[str, Any] = {
            "layer": name,
            "role": role,
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
