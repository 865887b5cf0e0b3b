"""Wanda: prune by weight magnitude times input activation norm (Sun et al. 2023, arXiv 2306.11695).

The score of weight ``W[i, j]`` is ``|W[i, j]| * ||X_j||_2``, where ``X_j`` is input feature ``j`` over all
calibration tokens. LLMs have a few input features with huge activations; a small weight on such a feature
moves the output more than a large weight on a quiet one, which plain magnitude ignores. No weight is
updated: only the mask changes, so the cost is one statistics pass per layer.

N:M and block patterns keep the top scores of each group. For per-layer unstructured sparsity Wanda
compares weights within each output row (the paper's choice for LLMs): that is exactly an N:M pattern with
M = in_features, used whenever it keeps the same total count as the per-layer pattern.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..core.patterns import NMPattern, Pattern
from .calibrated import CalibratedPruner


def row_pattern(pattern: Pattern, shape: tuple[int, int]) -> Pattern:
    """The per-output-row equivalent of a per-layer unstructured pattern, or ``pattern`` itself.

    Per row keeps ``round(density * in)``; it is used only when that sums to the layer's exact keep count.
    """
    out_features, in_features = shape
    if pattern.kind != "unstructured":
        return pattern
    keep_row = round(pattern.density * in_features)
    if 0 < keep_row < in_features and keep_row * out_features == pattern.allowed_per_group(shape):
        return NMPattern(keep_row, in_features)
    return pattern


class WandaPruner(CalibratedPruner):
    """Keep the weights with the largest ``|W| * ||X||`` in every group of the pattern; no weight update."""

    name: ClassVar[str] = "wanda"

    def __init__(self, pattern, per_output: bool = True) -> None:
        super().__init__(pattern)
        self.per_output = bool(per_output)

    def accumulate(self, stats: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
        squares = inputs.pow(2).sum(dim=0)
        return squares if stats is None else stats.add_(squares)

    def solve(self, weight: torch.Tensor, stats: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = weight.abs() * stats.sqrt().unsqueeze(0)
        pattern = row_pattern(self.pattern, tuple(weight.shape)) if self.per_output else self.pattern
        return weight, pattern.mask(scores)
