"""The :class:`Pattern` contract, and the exact, deterministic top-k selections every pattern masks with.

See :mod:`pruneformer.core.patterns` for why the selections look the way they do (exact counts, stable ties,
NaN ranked first, float32 scores).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

from ...errors import PatternError, one_line


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """Magnitudes used for ranking: detached, float32 (float64 kept), NaN mapped to +inf (ranks first)."""
    if not torch.is_floating_point(weight):
        raise PatternError(
            f"Sparsity patterns apply to floating-point weights, but got dtype {weight.dtype}.",
            "pass the layer's float weight tensor (float32, float16 or bfloat16).",
        )
    scores = weight.detach().abs()
    if scores.dtype != torch.float64:
        scores = scores.float()
    return torch.nan_to_num(scores, nan=math.inf)


def topk_mask_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the ``k`` largest entries of each row of ``scores`` ([groups, group_size]).

    A *stable* descending sort gives deterministic tie-breaking (lower index wins) on every device, which
    :func:`torch.topk` does not promise.
    """
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k <= 0 or scores.numel() == 0:
        return mask
    if k >= scores.shape[-1]:
        return mask.fill_(True)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return mask.scatter_(-1, order[..., :k], True)


def topk_mask_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping exactly the ``k`` largest entries of the 1-D ``scores`` (lower index wins ties).

    Uses one :func:`torch.kthvalue` selection (linear time, no full sort of millions of weights) for the
    threshold ``t``; keeps everything ``> t`` plus the first ``k - #(> t)`` entries equal to ``t``. No
    host-device synchronisation is needed.
    """
    numel = scores.numel()
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= numel:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, numel - k + 1).values
    above = scores > threshold
    at = scores == threshold
    need = k - above.sum()
    count_dtype = torch.int32 if numel < 2**31 - 1 else torch.int64
    rank_at = torch.cumsum(at.to(count_dtype), dim=0, dtype=count_dtype)
    return above | (at & (rank_at <= need))


class Pattern(abc.ABC):
    """A sparsity constraint on 2-D Linear weights ``[out_features, in_features]``.

    Subclasses describe how a weight splits into *groups* and how many non-zeros each group may keep;
    masking, projection, checking and statistics are shared so every pattern behaves identically.
    """

    # -- description ---------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def spec(self) -> str:
        """Canonical string; ``parse_pattern(p.spec) == p``. Used in logs, configs and checkpoints."""

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """``"nm"``, ``"block"`` or ``"unstructured"``: lets callers dispatch without isinstance checks."""

    @property
    @abc.abstractmethod
    def density(self) -> float:
        """Fraction of weights kept (``1 - sparsity``); what the size/speed reports are based on."""

    @property
    def is_global(self) -> bool:
        """True only for unstructured-global: its masks must be computed for all layers jointly."""
        return False

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description ``{"spec", "kind", <params>}`` for recipes, reports and checkpoints."""

    def __str__(self) -> str:
        return self.spec

    # -- grouping (implemented by subclasses) ----------------------------------------------------------
    @abc.abstractmethod
    def _check_divisible(self, out_features: int, in_features: int, name: str) -> None:
        """Raise :class:`PatternError` if the 2-D shape cannot be tiled by this pattern's groups."""

    @abc.abstractmethod
    def _group(self, x: torch.Tensor) -> torch.Tensor:
        """View a 2-D tensor as ``[groups, group_size]`` (each row is one constraint group)."""

    @abc.abstractmethod
    def _ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Inverse of :meth:`_group`."""

    @abc.abstractmethod
    def allowed_per_group(self, shape: tuple[int, ...]) -> int:
        """How many non-zeros one group of a weight with ``shape`` may keep."""

    # -- shared behaviour -------------------------------------------------------------------------------
    def check_shape(self, shape: tuple[int, ...], name: str = "weight") -> None:
        """Raise :class:`PatternError` (naming the layer and the fix) if the pattern cannot apply to ``shape``.

        Called before any pruning starts so a bad layer fails fast with a readable message instead of a
        reshape error deep inside a training step.
        """
        shape = tuple(int(s) for s in shape)
        layer = one_line(name)
        if len(shape) != 2:
            raise PatternError(
                f"Pattern {self.spec} applies to 2-D Linear weights [out_features, in_features], "
                f"but layer '{layer}' has shape {shape}.",
                "exclude the layer with --exclude or reshape its weight to 2-D first.",
            )
        self._check_divisible(shape[0], shape[1], layer)

    @torch.no_grad()
    def mask(self, weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
        """Bool mask (same shape/device) of the weights the exact Euclidean projection keeps.

        Keeps the largest ``|w|`` in each group, exactly :meth:`allowed_per_group` of them (zeros may be
        among the kept entries when a group has fewer non-zeros). Deterministic; never tracks gradients.
        """
        self.check_shape(tuple(weight.shape), name)
        scores = magnitude_scores(weight)
        keep = self.allowed_per_group(tuple(weight.shape))
        return self._ungroup(topk_mask_rows(self._group(scores), keep), weight.shape)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` with everything outside :meth:`mask` set to zero (same dtype and device).

        Differentiable w.r.t. ``weight`` (gradient = mask), which is what straight-through estimators need.
        ``masked_fill`` rather than multiplication so pruned NaN/inf entries become exact zeros.
        """
        return weight.masked_fill(~self.mask(weight), 0)

    @torch.no_grad()
    def _nonzeros_per_group(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        self.check_shape(tuple(weight.shape), name)
        return (self._group(weight.detach()) != 0).sum(dim=-1)

    def satisfied(self, weight: torch.Tensor, name: str = "weight") -> bool:
        """True if every group has at most the allowed number of non-zeros (zeros count as pruned).

        This is the check an exported model must pass for sparse kernels to accept it.
        """
        counts = self._nonzeros_per_group(weight, name)
        return bool((counts <= self.allowed_per_group(tuple(weight.shape))).all().item())

    @torch.no_grad()
    def groups_equal(self, mask_a: torch.Tensor, mask_b: torch.Tensor) -> tuple[int, int]:
        """(groups whose kept set is the same in both masks, all groups): how far two masks of one layer
        agree, counted in the pattern's own constraint groups (an N:M group, an r x c tile, or the layer)."""
        same = self.groups_same(mask_a, mask_b)
        return int(same.sum().item()), int(same.numel())

    @torch.no_grad()
    def groups_same(self, mask_a: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
        """Per constraint group, whether its kept set is the same in both masks (a flat bool tensor)."""
        return (self._group(mask_a) == self._group(mask_b)).all(dim=-1).reshape(-1)

    def group_stats(self, weight: torch.Tensor, name: str = "weight") -> dict[str, Any]:
        """Per-layer compliance report for logs and the final report.

        Keys: ``groups``, ``violating_groups``, ``max_nonzeros_per_group``, ``allowed_per_group`` (ints) and
        ``sparsity`` (actual fraction of exact zeros in ``weight``). For unstructured patterns the whole tensor
        is one group and the allowed count is the keep count.
        """
        counts = self._nonzeros_per_group(weight, name)
        allowed = self.allowed_per_group(tuple(weight.shape))
        numel = weight.numel()
        zeros = numel - int(counts.sum().item())
        return {
            "groups": int(counts.numel()),
            "violating_groups": int((counts > allowed).sum().item()),
            "max_nonzeros_per_group": int(counts.max().item()) if counts.numel() else 0,
            "allowed_per_group": int(allowed),
            "sparsity": zeros / numel if numel else 0.0,
        }
