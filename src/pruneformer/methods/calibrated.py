"""The bookkeeping shared by one-shot methods that prune from calibration data (Wanda, SparseGPT).

Such a method never trains. :func:`pruneformer.train.calibration.prune_layerwise` feeds it, layer by layer, the
inputs every target Linear sees on calibration text (:meth:`observe`), then asks it to prune the layer's
targets (:meth:`prune_target`) before the next layer's inputs are computed from the pruned layer. A
subclass only says what statistic it keeps (:meth:`accumulate`) and how it turns the statistic and the
weight into a pruned weight and its mask (:meth:`solve`).

There is no state to resume: a one-shot run is short and starts over. Global patterns (one threshold
across all layers) are refused: pruning layer by layer never holds every layer's scores at once, which
is the point (the memory of one layer, not of the model).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..core.settings import Settings
from ..core.targets import Target
from ..errors import PatternError, PruneformerError
from .base import PruningMethod


class CalibrationConfig(Settings):
    """Calibrated one-shot methods on a task (alps, sparsegpt, wanda, their -retrain recipes)."""

    flags: ClassVar[dict[str, str]] = {"calib-samples": "samples", "dampening": "dampening", "rescale": "rescale",
                                   "allocation": "allocation"}

    samples: int = Field(512, ge=1, description="training sentences (a seeded sample) calibrating the prune")
    batch_size: int = Field(16, ge=1, description="sentences per batch (padding never enters a statistic)")
    dampening: float = Field(0.01, ge=0, description="ridge on each Gram matrix, a fraction of its mean diagonal")
    alps_rho: float = Field(0.1, gt=0, description="ALPS: starting ADMM penalty (unit-diagonal Gram)")
    alps_max_iter: int = Field(300, ge=1, description="ALPS: most ADMM iterations per layer")
    rescale: Literal["sequential", "independent", "off"] = Field(
        "sequential", description="fisher-structured: least-squares scales of the kept units, fitted layer by layer "
        "on the cut model's inputs against the dense model's output and residual (sequential, Kwon et al.), on "
        "the dense model's inputs alone (independent), or none (off)")
    allocation: Literal["share", "search"] = Field(
        "search", description="fisher-structured: split the weight budget between heads and FFN units to keep the "
        "most Fisher importance (search, Kwon et al.), or keep the target share of each (share, as L1)")


class CalibratedPruner(PruningMethod):
    """A one-shot method driven by per-target input statistics; ``finalize`` returns the masks it chose."""

    trains: ClassVar[bool] = False
    calibrates: ClassVar[bool] = True

    def __init__(self, pattern) -> None:
        super().__init__(pattern)
        if self.pattern.is_global:
            raise PatternError(
                f"{self.name} prunes layer by layer, so it cannot use the global pattern {self.pattern.spec}.",
                f"use a per-layer pattern such as {self.pattern.spec.split(':')[0]} or 2:4",
            )

    def attach(self, model, targets) -> None:  # type: ignore[override]
        super().attach(model, targets)
        self.masks: dict[str, torch.Tensor] = {}
        self._stats: dict[str, Any] = {}
        self._tokens: dict[str, int] = {}

    # -- what a subclass defines ---------------------------------------------------------------------
    def accumulate(self, stats: Any, inputs: torch.Tensor) -> Any:
        """Fold one batch of float32 inputs ``[tokens, in_features]`` into ``stats`` (None at first)."""
        raise NotImplementedError

    def solve(self, weight: torch.Tensor, stats: Any, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pruned float32 weight ``[out, in]`` and its boolean keep-mask, from the statistics."""
        raise NotImplementedError

    # -- the calibration hooks -----------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, target: Target, inputs: torch.Tensor) -> None:
        flat = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        self._stats[target.name] = self.accumulate(self._stats.get(target.name), flat)
        self._tokens[target.name] = self._tokens.get(target.name, 0) + flat.shape[0]

    @torch.no_grad()
    def prune_target(self, target: Target) -> None:
        if target.name not in self._stats:
            raise PruneformerError(f"{self.name}: no calibration input reached layer {target.name}.",
                                   "run prune_layerwise() with at least one calibration batch")
        stats, tokens = self._stats.pop(target.name), self._tokens.pop(target.name)
        weight = target.linear_weight
        pruned, mask = self.solve(weight.detach().float(), stats, tokens)
        weight.copy_(pruned.masked_fill(~mask, 0).to(weight.dtype))
        self.masks[target.name] = mask

    def finalize(self) -> dict[str, torch.Tensor]:
        missing = [t.name for t in self.targets if t.name not in self.masks]
        if missing:
            raise PruneformerError(f"{self.name} has not pruned {missing[0]} (and {len(missing) - 1} more) yet.",
                                   "calibrate first: pruneformer.train.calibration.prune_layerwise(model, method, batches)")
        self.apply_masks(self.masks)
        return dict(self.masks)
