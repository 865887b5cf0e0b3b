"""Masked fine-tuning: the mask is fixed and pruned weights stay exactly zero.

Used after magnitude pruning (NVIDIA's ASP recipe, "magnitude + retrain") and after ADMM's hard prune.
Gradients of pruned weights are zeroed after backward, and the weights are re-masked after every
optimizer step, so neither momentum nor weight decay can bring a pruned weight back.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from .base import PruningMethod


class MaskedFineTuner(PruningMethod):
    """Fine-tune with fixed masks: given ones, or the magnitude projection at attach time."""

    name: ClassVar[str] = "masked"

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None,
                    steps: int = 0) -> "MaskedFineTuner":
        """Continue from the previous phase's masks (none: magnitude masks at attach time)."""
        return cls(recipe.prune.pattern, masks=masks)

    def __init__(self, pattern, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__(pattern)
        self.masks: dict[str, torch.Tensor] = dict(masks or {})

    def attach(self, model, targets) -> None:  # type: ignore[override]
        super().attach(model, targets)
        if not self.masks:
            self.masks = self.current_masks()
        missing = [t.name for t in self.targets if t.name not in self.masks]
        if missing:
            raise KeyError(f"no mask for {missing[0]}")
        self.masks = {t.name: self.masks[t.name].to(t.module.weight.device) for t in self.targets}
        self._float_masks = [self.masks[t.name].to(t.module.weight.dtype) for t in self.targets]
        self.apply_masks(self.masks)

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        grads = self.grads
        if all(g is not None for g in grads):
            torch._foreach_mul_(grads, self._float_masks)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        torch._foreach_mul_(self.weights, self._float_masks)

    def finalize(self) -> dict[str, torch.Tensor]:
        self.apply_masks(self.masks)
        return dict(self.masks)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "masks": {k: v.clone() for k, v in self.masks.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.targets:
            self.masks = {k: v.to(torch.bool) for k, v in state["masks"].items()}
            self.attach(self.model, self.targets)
        else:
            self.masks = dict(state["masks"])
