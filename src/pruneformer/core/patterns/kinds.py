"""The patterns: N:M, ``r x c : k`` blocks and unstructured (per layer or global), and :func:`compute_masks`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import torch

from ...errors import PatternError
from .base import Pattern, magnitude_scores, topk_mask_flat


@dataclass(frozen=True)
class NMPattern(Pattern):
    """Keep ``n`` of every ``m`` consecutive weights along the input (last) dimension; 2:4 is NVIDIA's."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)) or not 0 < self.n < self.m:
            raise PatternError(
                f"N:M pattern {self.n}:{self.m} is impossible: N must satisfy 0 < N < M.",
                "keep fewer than M of every M weights, e.g. 2:4, 1:4 or 4:8.",
            )

    @property
    def spec(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def kind(self) -> str:
        return "nm"

    @property
    def density(self) -> float:
        return self.n / self.m

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "n": self.n, "m": self.m}

    def allowed_per_group(self, shape: tuple[int, ...]) -> int:
        return self.n

    def _check_divisible(self, out_features: int, in_features: int, name: str) -> None:
        if in_features % self.m:
            raise PatternError(
                f"Pattern {self.spec} needs in_features divisible by {self.m}, "
                f"but layer '{name}' has {in_features}.",
                f"pick an M that divides {in_features} or exclude the layer with --exclude.",
            )

    def _group(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.m)

    def _ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return grouped.reshape(shape)


@dataclass(frozen=True)
class BlockPattern(Pattern):
    """Tile the weight into ``rows x cols`` blocks and keep the ``k`` largest ``|w|`` in each.

    ``1x4:2`` is the same constraint as ``2:4``; larger tiles (e.g. ``4x4:8``) give the pruner more freedom
    for the same density.
    """

    rows: int
    cols: int
    k: int

    def __post_init__(self) -> None:
        ints = all(isinstance(v, int) for v in (self.rows, self.cols, self.k))
        if not ints or self.rows < 1 or self.cols < 1:
            raise PatternError(
                f"Block pattern {self.rows}x{self.cols}:{self.k} is impossible: tile sides must be positive integers.",
                "use a tile like 4x4:8 or 1x4:2.",
            )
        if not 0 < self.k < self.rows * self.cols:
            raise PatternError(
                f"Block pattern {self.spec} is impossible: K must satisfy 0 < K < {self.rows * self.cols} "
                f"(the tile size {self.rows}x{self.cols}).",
                f"keep fewer weights than the tile holds, e.g. {self.rows}x{self.cols}:"
                f"{max(1, self.rows * self.cols // 2)}.",
            )

    @property
    def spec(self) -> str:
        return f"{self.rows}x{self.cols}:{self.k}"

    @property
    def kind(self) -> str:
        return "block"

    @property
    def density(self) -> float:
        return self.k / (self.rows * self.cols)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "rows": self.rows, "cols": self.cols, "k": self.k}

    def allowed_per_group(self, shape: tuple[int, ...]) -> int:
        return self.k

    def _check_divisible(self, out_features: int, in_features: int, name: str) -> None:
        if out_features % self.rows or in_features % self.cols:
            raise PatternError(
                f"Pattern {self.spec} needs out_features divisible by {self.rows} and in_features divisible "
                f"by {self.cols}, but layer '{name}' is {out_features}x{in_features}.",
                f"pick a tile size that divides {out_features}x{in_features} or exclude the layer with --exclude.",
            )

    def _group(self, x: torch.Tensor) -> torch.Tensor:
        out_features, in_features = x.shape
        r, c = self.rows, self.cols
        tiles = x.reshape(out_features // r, r, in_features // c, c).permute(0, 2, 1, 3)
        return tiles.reshape(-1, r * c)

    def _ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        out_features, in_features = shape
        r, c = self.rows, self.cols
        tiles = grouped.reshape(out_features // r, in_features // c, r, c).permute(0, 2, 1, 3)
        return tiles.reshape(out_features, in_features)


def _format_percent(fraction: float) -> str:
    """Exact shortest percentage string: ``0.5 -> "50"``, ``0.125 -> "12.5"``.

    Decimal arithmetic on ``repr`` (the shortest round-tripping decimal) makes ``parse_pattern(p.spec) == p``
    hold bit-for-bit for every float.
    """
    return format((Decimal(repr(float(fraction))) * 100).normalize(), "f")


@dataclass(frozen=True)
class UnstructuredPattern(Pattern):
    """Remove the fraction ``sparsity`` of weights by magnitude, per layer or (``scope="global"``) jointly.

    Per layer each tensor keeps ``round((1 - sparsity) * numel)`` weights; global keeps
    ``round((1 - sparsity) * total)`` over all tensors with one threshold (see :func:`compute_masks`).
    """

    sparsity: float
    scope: str = "layer"

    def __post_init__(self) -> None:
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (0.0 <= float(s) < 1.0):
            raise PatternError(
                f"Sparsity {s!r} is outside the range [0, 1) (the fraction of weights removed).",
                "use a value like 0.5 or 50% (0% keeps everything; 100% would delete the layer).",
            )
        object.__setattr__(self, "sparsity", float(s))
        if self.scope not in ("layer", "global"):
            raise PatternError(
                f"Unknown unstructured scope {self.scope!r}.",
                "use scope 'layer' (each layer pruned separately) or 'global' (one threshold for all layers).",
            )

    @property
    def spec(self) -> str:
        base = f"{_format_percent(self.sparsity)}%"
        return f"{base}:global" if self.is_global else base

    @property
    def kind(self) -> str:
        return "unstructured"

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    @property
    def is_global(self) -> bool:
        return self.scope == "global"

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "sparsity": self.sparsity, "scope": self.scope}

    def keep_count(self, numel: int) -> int:
        """Number of weights kept out of ``numel``: ``round((1 - sparsity) * numel)`` (one shared definition)."""
        return min(int(numel), max(0, round((1.0 - self.sparsity) * int(numel))))

    def allowed_per_group(self, shape: tuple[int, ...]) -> int:
        return self.keep_count(math.prod(shape))

    def _check_divisible(self, out_features: int, in_features: int, name: str) -> None:
        return None

    def _group(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1)

    def _ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return grouped.reshape(shape)

    @torch.no_grad()
    def mask(self, weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
        """Keep the ``keep_count(numel)`` largest ``|w|`` of this tensor (a global pattern given a single
        tensor treats it as the whole model; use :func:`compute_masks` for the joint projection)."""
        self.check_shape(tuple(weight.shape), name)
        scores = magnitude_scores(weight).reshape(-1)
        return topk_mask_flat(scores, self.keep_count(scores.numel())).reshape(weight.shape)


@torch.no_grad()
def compute_masks(pattern: Pattern, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks for every named weight under ``pattern`` (keys and order preserved).

    All shapes are checked first so an unsuitable layer fails before any work is done. For a global
    unstructured pattern this is the exact joint projection: the ``round((1 - s) * total)`` largest ``|w|``
    over all tensors together, selected with one threshold (ties broken by dictionary order, then index),
    so the total kept count is exact. Masks are returned on each weight's own device.
    """
    for name, weight in weights.items():
        pattern.check_shape(tuple(weight.shape), name)
    if not pattern.is_global:
        return {name: pattern.mask(weight, name) for name, weight in weights.items()}
    if not weights:
        return {}
    assert isinstance(pattern, UnstructuredPattern)
    names = list(weights)
    device = weights[names[0]].device
    # One common score dtype so magnitudes from fp16/bf16/fp32 layers compare exactly (float64 if any is).
    dtype = torch.float64 if any(w.dtype == torch.float64 for w in weights.values()) else torch.float32
    flat = [magnitude_scores(weights[n]).reshape(-1).to(device=device, dtype=dtype) for n in names]
    scores = torch.cat(flat)
    keep = topk_mask_flat(scores, pattern.keep_count(scores.numel()))
    masks: dict[str, torch.Tensor] = {}
    for name, piece in zip(names, torch.split(keep, [f.numel() for f in flat])):
        w = weights[name]
        masks[name] = piece.reshape(w.shape).to(w.device)
    return masks
