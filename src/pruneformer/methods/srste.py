"""SR-STE: sparse-refined straight-through estimation (Zhou et al. 2021).

The forward pass uses W * M with M = Proj(W) recomputed every step; the dense W receives the gradient of
the sparse weights (straight through) plus lambda_w * (1 - M) * W, which decays the pruned weights so the
mask settles instead of flipping. Implemented by swapping the masked weights in before the forward pass
and restoring the dense ones after backward, so the model's modules stay plain ``nn.Linear``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from .base import PruningMethod


class SRSTEPruner(PruningMethod):
    """Train dense weights through their per-step projection onto ``pattern``."""

    name: ClassVar[str] = "srste"

    def __init__(self, pattern, lambda_w: float = 2e-4) -> None:
        super().__init__(pattern)
        if lambda_w < 0:
            raise ValueError("lambda_w must be >= 0")
        self.lambda_w = float(lambda_w)
        self._dense: list[torch.Tensor] | None = None
        self._masks: list[torch.Tensor] = []

    @torch.no_grad()
    def before_forward(self, step: int) -> None:
        if self._dense is not None:  # a forward without backward: restore before re-masking
            self._restore()
        self._dense = [w.detach().clone() for w in self.weights]
        masks = self.current_masks()
        self._masks = [masks[n].to(w.dtype) for n, w in zip(self.names, self.weights)]
        torch._foreach_mul_(self.weights, self._masks)

    @torch.no_grad()
    def _restore(self) -> None:
        for w, dense in zip(self.weights, self._dense or []):
            w.copy_(dense)
        self._dense = None

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        if self._dense is None:
            return
        dense = self._dense
        self._restore()
        grads = self.grads
        if self.lambda_w and all(g is not None for g in grads):
            decay = torch._foreach_mul([1.0 - m for m in self._masks], dense)
            torch._foreach_add_(grads, decay, alpha=self.lambda_w)

    def eval_weights(self):
        """Evaluate the sparse network the forward pass uses."""
        return self.projected_weights()

    def finalize(self) -> dict[str, torch.Tensor]:
        if self._dense is not None:
            self._restore()
        return super().finalize()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lambda_w": self.lambda_w}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.lambda_w = float(state.get("lambda_w", self.lambda_w))
