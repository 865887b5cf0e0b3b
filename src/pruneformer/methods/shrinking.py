"""The contract of a method that physically shrinks the model (``MethodEntry.shrinks``): what the structured
run (:func:`pruneformer.runs.structured.run_structured`) calls, declared once instead of followed by habit.

Step 1 chooses heads, FFN units (and output rows) on the dense model; ``finalize`` fixes them; the run cuts
the model to :meth:`layer_plans` with ``compress.shrink_model``; then a block step of the shrunk model
(:meth:`block_step`, when :meth:`shrink_schedule` gives it epochs) or retraining of it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from torch import nn

from ..core.structure import LayerPlan, ShrinkSchedule
from .base import PruningMethod


class ShrinkingMethod(PruningMethod):
    """A structured method whose result is a smaller model, not a mask."""

    #: True: before ``finalize`` the run calls :meth:`calibrate` with labelled training batches
    calibrated: ClassVar[bool] = False

    def calibrate(self, model: nn.Module, batches: Sequence[dict[str, Any]], teacher: nn.Module | None = None) -> None:
        """Read calibration batches (with labels) after ``attach`` and before ``finalize``; ``teacher``: a copy of
        the dense model the caller already holds (the method may read it and must leave it unchanged)."""
        raise NotImplementedError(f"{type(self).__name__} is not calibrated")

    @staticmethod
    def check_model(model: nn.Module, recipe: Any) -> None:
        """Fail before any training, with a one-line error, when ``model`` cannot be shrunk this way."""
        raise NotImplementedError

    @staticmethod
    def shrink_schedule(recipe: Any) -> ShrinkSchedule:
        """How ``prune.epochs`` is spent around the cut: step 1, then a block step or retraining."""
        raise NotImplementedError

    @staticmethod
    def check_budget(recipe: Any, steps_per_epoch: int) -> str | None:
        """Before any training: fill the settings the recipe leaves to the budget, then raise a one-line error
        when the method cannot reach its target in the steps the schedule gives it, or return a warning when
        it may not quite (default: None, it always can)."""
        return None

    @classmethod
    def block_step(cls, recipe: Any, keep: float) -> "ShrinkingMethod":
        """The block step of the shrunk model, keeping ``keep`` of its weights (methods whose schedule has
        one)."""
        raise NotImplementedError(f"{cls.__name__} has no block step: its shrink_schedule must give it 0 epochs")

    def layer_plans(self, num_layers: int, round_to: int | None = None) -> list[LayerPlan]:
        """After ``finalize``: what each layer keeps (kept rows and units rounded up to ``round_to``)."""
        raise NotImplementedError

    def kept_summary(self) -> list[dict[str, int]]:
        """Per layer: kept heads, FFN units and output rows (after ``finalize``), for the report."""
        raise NotImplementedError
