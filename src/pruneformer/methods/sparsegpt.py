"""SparseGPT: one-shot pruning with an optimal-brain-surgeon weight update (Frantar & Alistarh 2023,
arXiv 2301.00774), following the authors' released ``fasterprune``.

For a Linear with calibration inputs ``X`` the layer's reconstruction error ``||W X - W' X||^2`` has the
Hessian ``H = 2 X X^T / n``. Columns are visited left to right; when a column is pruned, the error it
leaves is spread onto the columns not visited yet through the upper Cholesky factor of ``H^-1``, so the
remaining weights compensate. The mask is chosen on the fly, on the *updated* weights, with the OBS
saliency ``w^2 / [H^-1]_jj^2``:

* N:M (and r x c blocks): at the first column of each group of M (or c) columns, keep the top-N saliencies
  of each row's group (each tile), exactly as the pattern requires;
* unstructured: at the start of each block of ``blocksize`` columns, keep the top saliencies of the whole
  block. Block quotas telescope (``keep(out * end) - keep(out * start)``), so the layer keeps exactly the
  count the per-layer pattern allows.

``dampening`` (1% of the mean diagonal, the paper's default) keeps ``H`` well conditioned.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from ..core.patterns import UnstructuredPattern
from ..errors import PruneformerError
from .calibrated import CalibratedPruner


class SparseGPTPruner(CalibratedPruner):
    """Prune each target to the pattern and update the kept weights to reconstruct its calibration outputs."""

    name: ClassVar[str] = "sparsegpt"

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None,
                    steps: int = 0) -> "SparseGPTPruner":
        return cls(recipe.prune.pattern, dampening=recipe.calibration.dampening)

    def __init__(self, pattern, dampening: float = 0.01, blocksize: int = 128) -> None:
        super().__init__(pattern)
        if dampening < 0 or blocksize < 1:
            raise ValueError("dampening must be >= 0 and blocksize >= 1")
        self.dampening = float(dampening)
        self.blocksize = int(blocksize)

    def accumulate(self, stats: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
        gram = inputs.t() @ inputs
        return gram if stats is None else stats.add_(gram)

    def _group_width(self, in_features: int) -> int:
        """Columns whose mask is chosen together: M for N:M, c for r x c blocks, a block for unstructured."""
        kind = self.pattern.kind
        if kind == "nm":
            return self.pattern.m  # type: ignore[attr-defined]
        if kind == "block":
            return self.pattern.cols  # type: ignore[attr-defined]
        return min(self.blocksize, in_features)

    def _keep(self, saliency: torch.Tensor, start: int, end: int, out_features: int) -> torch.Tensor:
        """Keep-mask of the columns ``start:end`` from their saliencies ``[out, end - start]``."""
        if self.pattern.kind != "unstructured":
            return self.pattern.mask(saliency)
        quota = self.pattern.allowed_per_group((out_features, end)) - self.pattern.allowed_per_group(
            (out_features, start))
        if quota <= 0:
            return torch.zeros_like(saliency, dtype=torch.bool)
        return UnstructuredPattern(1.0 - quota / saliency.numel()).mask(saliency)

    def inverse_hessian_factor(self, gram: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Upper Cholesky factor of the damped ``H^-1``, and the mask of dead inputs (never non-zero)."""
        hessian = gram * (2.0 / max(tokens, 1))
        diagonal = torch.diagonal(hessian)
        dead = diagonal == 0
        hessian[dead, dead] = 1.0
        hessian.diagonal().add_(self.dampening * float(torch.diagonal(hessian).mean()))
        factor, info = torch.linalg.cholesky_ex(hessian)
        if int(info) != 0:
            raise PruneformerError("SparseGPT: the calibration Hessian is not positive definite.",
                                   "raise the dampening (e.g. 0.1) or calibrate on more tokens")
        return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True), dead

    def solve(self, weight: torch.Tensor, stats: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        out_features, in_features = weight.shape
        hinv, dead = self.inverse_hessian_factor(stats.clone(), tokens)
        w = weight.clone()
        w[:, dead] = 0
        keep = torch.zeros_like(w, dtype=torch.bool)
        width = self._group_width(in_features)
        block = width * max(1, self.blocksize // width)
        for b1 in range(0, in_features, block):
            b2 = min(b1 + block, in_features)
            w1, h1 = w[:, b1:b2].clone(), hinv[b1:b2, b1:b2]
            errors = torch.zeros_like(w1)
            diag = torch.diagonal(h1)
            for i in range(b2 - b1):
                if i % width == 0:
                    j = min(i + width, b2 - b1)
                    saliency = w1[:, i:j].pow(2) / diag[i:j].pow(2).unsqueeze(0)
                    keep[:, b1 + i:b1 + j] = self._keep(saliency, b1 + i, b1 + j, out_features)
                column = w1[:, i]
                kept = column.masked_fill(~keep[:, b1 + i], 0)
                err = (column - kept) / diag[i]
                w1[:, i:] -= err.unsqueeze(1) * h1[i, i:].unsqueeze(0)
                w1[:, i] = kept
                errors[:, i] = err
            w[:, b1:b2] = w1
            w[:, b2:] -= errors @ hinv[b1:b2, b2:]
        return w, keep
