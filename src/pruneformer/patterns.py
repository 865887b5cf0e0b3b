"""What a sparsity pattern is.

A pattern is the *constraint set* that every pruning method projects onto: N:M (keep ``n`` of every ``m``
consecutive weights along the input dimension, NVIDIA's convention), ``r x c : k`` blocks (keep ``k`` of
each ``r x c`` tile) and unstructured sparsity (keep a fraction of the weights, per layer or jointly across
all layers). This module knows nothing about models: it maps 2-D weight tensors ``[out_features,
in_features]`` to boolean masks.

Why the functions look the way they do:

* :meth:`Pattern.mask` returns the support of the *exact Euclidean projection* onto the pattern, i.e. it keeps
  the largest ``|w|`` in every group. ADMM's Z-update and SR-STE's forward pass are both exactly this
  projection, so getting it exactly right (and exactly the allowed count) matters for convergence proofs
  and for the hardware kernels that reject any group with one non-zero too many.
* Everything is vectorised (one sort / one selection over all groups at once) because SR-STE calls
  :meth:`Pattern.mask` on every training step for every layer.
* Ties are broken deterministically: among equal magnitudes the element with the lower index (row-major
  within the group; dictionary order then row-major for a global pattern) is kept. Runs are therefore
  reproducible across devices, and the kept count stays exact even for weights with many equal values
  (e.g. after quantisation or on all-zero layers).
* NaN magnitudes rank above everything else (as in :func:`torch.sort`) so the kept count stays exact and a
  diverged weight is kept visibly rather than silently hidden.
* Scores are computed on ``weight.detach().abs()`` in float32 (float64 stays float64): fp16/bf16 values are
  exactly representable in float32, so the order is unchanged, and CPU sort/selection kernels for half types
  are missing or slow.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import torch

from pruneformer.errors import PatternError

__all__ = [
    "Pattern",
    "NMPattern",
    "BlockPattern",
    "UnstructuredPattern",
    "parse_pattern",
    "compute_masks",
    "ACCEPTED_FORMS",
]

#: Shown in every "unknown pattern" error so the user sees all accepted spellings at once.
ACCEPTED_FORMS = "write N:M (e.g. 2:4), RxC:K (e.g. 4x4:8) or a sparsity like 50% / 50%:global."


def _one_line(text: str) -> str:
    """Collapse whitespace so user-supplied names cannot break the one-line error contract."""
    return " ".join(str(text).split())


def _scores(weight: torch.Tensor) -> torch.Tensor:
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


def _topk_mask_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
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


def _topk_mask_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
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
        layer = _one_line(name)
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
        scores = _scores(weight)
        keep = self.allowed_per_group(tuple(weight.shape))
        return self._ungroup(_topk_mask_rows(self._group(scores), keep), weight.shape)

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
        same = (self._group(mask_a) == self._group(mask_b)).all(dim=-1)
        return int(same.sum().item()), int(same.numel())

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
        scores = _scores(weight).reshape(-1)
        return _topk_mask_flat(scores, self.keep_count(scores.numel())).reshape(weight.shape)


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_NM_RE = re.compile(r"^(\d+)\s*:\s*(\d+)$")
_BLOCK_RE = re.compile(r"^(\d+)\s*[x×*]\s*(\d+)\s*:\s*(\d+)$")
_PCT_RE = re.compile(rf"^({_NUM})\s*%$")
_FRAC_RE = re.compile(rf"^({_NUM})$")


def _parse_sparsity(text: str, original: str) -> float | None:
    """Parse ``"50%"`` or ``"0.5"`` to a fraction (exactly, via Decimal); None if it is not a number."""
    pct = _PCT_RE.match(text)
    frac = None if pct else _FRAC_RE.match(text)
    if not pct and not frac:
        return None
    try:
        value = Decimal((pct or frac).group(1))
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        return None
    if pct:
        value = value / 100
    elif value >= 1:
        raise PatternError(
            f"Sparsity '{_one_line(original)}' is outside the range [0, 1) (a bare number is the fraction removed).",
            f"write a fraction like 0.5 or a percentage like {_one_line(text)}%.",
        )
    if not (0 <= value < 1):
        raise PatternError(
            f"Sparsity '{_one_line(original)}' is outside the range [0%, 100%) (the fraction of weights removed).",
            "use a value like 50% or 0.5 (0% keeps everything; 100% would delete the layer).",
        )
    return float(value)


def parse_pattern(text: str) -> Pattern:
    """Parse a user-facing pattern string into a :class:`Pattern`.

    Accepted: ``"N:M"`` (``"2:4"``), ``"RxC:K"`` (``"4x4:8"``), ``"50%"`` or a bare fraction ``"0.5"``
    (per-layer unstructured), and ``"50%:global"`` / ``"global:50%"`` (one threshold across all layers).
    Whitespace and case are ignored. Anything else raises :class:`PatternError` listing the accepted forms.
    """
    if isinstance(text, Pattern):
        return text
    if not isinstance(text, str):
        raise PatternError(f"Sparsity pattern must be a string, got {type(text).__name__}.", ACCEPTED_FORMS)
    raw = text
    s = " ".join(text.strip().lower().split())

    if m := _NM_RE.match(s):
        return NMPattern(int(m.group(1)), int(m.group(2)))
    if m := _BLOCK_RE.match(s):
        return BlockPattern(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    scope = "layer"
    body = s
    for prefix in ("global:", "global "):
        if body.startswith(prefix):
            scope, body = "global", body[len(prefix):].strip()
            break
    else:
        for suffix in (":global", " global"):
            if body.endswith(suffix):
                scope, body = "global", body[: -len(suffix)].strip()
                break
        else:
            if body.endswith(":layer"):
                body = body[: -len(":layer")].strip()
    fraction = _parse_sparsity(body, raw)
    if fraction is not None:
        return UnstructuredPattern(fraction, scope)
    raise PatternError(f"Unknown sparsity pattern '{_one_line(raw)}'.", ACCEPTED_FORMS)


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
    flat = [_scores(weights[n]).reshape(-1).to(device=device, dtype=dtype) for n in names]
    scores = torch.cat(flat)
    keep = _topk_mask_flat(scores, pattern.keep_count(scores.numel()))
    masks: dict[str, torch.Tensor] = {}
    for name, piece in zip(names, torch.split(keep, [f.numel() for f in flat])):
        w = weights[name]
        masks[name] = piece.reshape(w.shape).to(w.device)
    return masks
