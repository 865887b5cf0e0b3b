"""The recipe section of the structured methods that shrink to a fraction of the encoder weights
(``mlpruning``; ``l1-structured`` reads its target and alignment)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from ..core.settings import Settings
from ..errors import RecipeError


class MLPruningConfig(Settings):
    """Structured pruning to a fraction of the encoder weights (``mlpruning`` and the ``l1-structured`` baseline)."""

    flags: ClassVar[dict[str, str]] = {"target": "target", "block-size": "block_size", "block-keep": "block_keep",
                                       "align": "align"}

    target: float = Field(0.5, gt=0, le=1, description="fraction of the encoder Linears' weights that remains")
    block_size: int = Field(32, ge=1, description="block size of MLPruning's block step (16 or 32 in the paper)")
    align: int = Field(16, ge=1, description="kept FFN units and output rows per layer are rounded to a multiple "
                       "of this (odd widths make matrix kernels much slower); 1: no rounding")
    block_keep: float = Field(1.0, gt=0, le=1, description="share of the shrunk model kept by the block step; 1: no block step")
    block_epochs: float | None = Field(None, ge=0, description="epochs of the block step (default: half of prune.epochs)")
    finetune_epochs: float = Field(0.0, ge=0, description="epochs (of prune.epochs) fine-tuning the shrunk model "
                                   "after the head/row step, with distillation; no block step only")
    threshold_init: float = Field(10.0, description="initial Top-k threshold t (keep ratio sigmoid(t))")
    score_lr: float | None = Field(None, gt=0, lt=10, description="learning rate of the scores and thresholds; "
                                   "default: fitted to the budget, 1.5x what brings the thresholds to the target")
    distill: bool = Field(True, description="distil from the dense model (the block step: from the step-2 model)")
    temperature: float = Field(2.0, gt=0)
    distill_alpha: float = Field(0.9, ge=0, le=1, description="weight of the teacher terms; 1 - alpha weights the task loss")
    hidden_weight: float = Field(1.0, ge=0, description="weight of each layer's hidden-state MSE (summed over layers)")
    attention_weight: float = Field(1.0, ge=0, description="weight of each layer's attention-probability MSE")

    def check_recipe(self, recipe: Any) -> None:
        """MLPruning's two steps must fit: the block step keeps at least the target, inside the budget."""
        budget = recipe.prune.epochs
        if self.block_keep < 1:
            if self.target > self.block_keep:
                raise ValueError(f"mlpruning.target ({self.target}) exceeds mlpruning.block_keep ({self.block_keep}): "
                                 "the head/row step would have to keep more than all weights")
            if self.block_epochs is not None and self.block_epochs > budget:
                raise ValueError(f"mlpruning.block_epochs ({self.block_epochs}) exceeds prune.epochs ({budget})")
            if self.finetune_epochs:
                raise ValueError("mlpruning.finetune_epochs needs block_keep 1 (the block step ends the run)")
        if self.finetune_epochs >= budget > 0:
            raise ValueError(f"mlpruning.finetune_epochs ({self.finetune_epochs}) leaves nothing of prune.epochs "
                             f"({budget}) for the head/row step")

    @classmethod
    def fit_candidate(cls, section: dict[str, Any], budget: float, value: float | None) -> dict[str, Any]:
        """A compare candidate's fraction is the target; a block step that would keep less is turned off."""
        if value is None:
            return section
        return {**section, "target": value, **({"block_keep": 1.0} if value > section["block_keep"] else {})}


def threshold_reach(score_lr: float, steps: int) -> float:
    """The farthest a threshold can move in ``steps`` optimizer steps: Adam without momentum moves it by at
    most about the step's lr, and the loop's warmup + linear decay sums to (steps + 2) / 2 peak lrs."""
    return score_lr * (steps + 2) / 2


def threshold_fall(m: MLPruningConfig) -> float:
    """The least the head/row thresholds must fall from ``threshold_init`` to keep ``target / block_keep``: a
    matrix masked by rows and columns keeps about r^2 at a uniform ratio r, so r = sqrt(keep)."""
    root = math.sqrt(min(1.0, m.target / m.block_keep))
    return m.threshold_init - math.log(root / (1 - root)) if root < 1 else 0.0


def fit_threshold_budget(m: MLPruningConfig, step_epochs: float, steps_per_epoch: int) -> str | None:
    """Before any training: fill ``score_lr`` when the recipe leaves it to the budget (1.5x the lr whose
    reach is the fall the target needs), then check it (:func:`check_threshold_budget`)."""
    steps = math.ceil(step_epochs * steps_per_epoch)
    if m.score_lr is None:
        m.score_lr = float(f"{1.5 * max(threshold_fall(m), 1.0) / ((max(steps, 1) + 2) / 2):.3g}")
    return check_threshold_budget(m, step_epochs, steps_per_epoch)


def check_threshold_budget(m: MLPruningConfig, step_epochs: float, steps_per_epoch: int) -> str | None:
    """Before any training: refuse a head/row step whose thresholds cannot come even halfway down to the
    target in the steps it has; return a warning when they may not come all the way (finalize then lowers
    them at once). The issue "Pruning that pays": at init 10 and score lr 0.01 over 536 steps the thresholds
    kept 1.000 of the weights at the end, finalize cut half the model at once and the run lost 8 points."""
    steps = math.ceil(step_epochs * steps_per_epoch)
    keep = min(1.0, m.target / m.block_keep)
    if steps <= 0 or keep >= 1:
        return None
    needed = threshold_fall(m)
    reach = threshold_reach(m.score_lr, steps)
    if reach >= needed:
        return None
    problem = (f"MLPruning's thresholds start at {m.threshold_init:g} and must fall by at least ~{needed:.1f} to keep "
               f"{keep:.2f} of the weights, but at score_lr {m.score_lr:g} over the head/row step's {steps} steps they "
               f"can move at most ~{reach:.1f}")
    fix = (f"raise mlpruning.score_lr to {1.5 * needed / ((steps + 2) / 2):.2g} or more, lower "
           "mlpruning.threshold_init, or give it more epochs")
    if reach < needed / 2:
        raise RecipeError(problem + ", so finalize would cut the model at once.", fix)
    return f"{problem}: finalize may have to lower them at once. Fix: {fix}."
