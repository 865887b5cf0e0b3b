"""SR-STE: sparse-refined straight-through estimation (Zhou et al. 2021).

The forward pass uses W * M with M = Proj(W) recomputed every step; the dense W receives the gradient of
the sparse weights (straight through) and a decay of its pruned weights, so the mask settles instead of
flipping. Implemented by swapping the masked weights in before the forward pass and restoring the dense
ones after backward, so the model's modules stay plain ``nn.Linear``.

The decay (``decay``):

* ``decoupled`` (default; for Adam): after each optimizer step the pruned weights shrink by a fixed
  fraction, W[~M] <- W[~M] / (1 + ``decay_rate``), the proximal step of (decay_rate / 2) ||(1 - M) W||^2.
  Its strength does not depend on the optimizer's normalisation.
* ``gradient`` (the paper's, for SGD): lambda_w * (1 - M) * W is added to the gradient. The paper's
  lambda_w = 2e-4 comes from SGD at lr 0.1; under Adam, whose step is ~lr whatever the gradient, that
  term is ~1e-5 of a typical gradient and SR-STE degenerates to plain STE.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

import torch
from pydantic import Field

from ..core.settings import Settings
from .base import PruningMethod


class SRSTEConfig(Settings):
    """SR-STE: forward through the per-step projection, decay the pruned weights."""

    flags: ClassVar[dict[str, str]] = {"srste-decay": "decay", "decay-rate": "decay_rate", "lambda-w": "lambda_w"}

    decay: Literal["decoupled", "gradient"] = Field(
        "decoupled", description="decoupled: pruned weights shrink by 1/(1+decay_rate) per step (Adam-proof); "
        "gradient: the paper's lambda_w (1-M) W added to the gradient (an SGD setting)")
    decay_rate: float = Field(2e-3, ge=0, lt=1, description="per-step shrink of pruned weights (decay: decoupled)")
    lambda_w: float = Field(2e-4, ge=0, description="gradient decay on pruned weights (decay: gradient)")


class SRSTEPruner(PruningMethod):
    """Train dense weights through their per-step projection onto ``pattern``."""

    name: ClassVar[str] = "srste"

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None, steps: int = 0) -> "SRSTEPruner":
        """From ``recipe.srste``."""
        r = recipe.srste
        return cls(recipe.prune.pattern, lambda_w=r.lambda_w, decay=r.decay, decay_rate=r.decay_rate)

    def __init__(self, pattern, lambda_w: float = 2e-4, decay: str = "decoupled", decay_rate: float = 2e-3) -> None:
        super().__init__(pattern)
        if lambda_w < 0 or decay_rate < 0:
            raise ValueError("lambda_w and decay_rate must be >= 0")
        if decay not in ("decoupled", "gradient"):
            raise ValueError("decay must be 'decoupled' or 'gradient'")
        self.lambda_w = float(lambda_w)
        self.decay = decay
        self.decay_rate = float(decay_rate)
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
        if self.decay == "gradient" and self.lambda_w and all(g is not None for g in grads):
            decay = torch._foreach_mul([1.0 - m for m in self._masks], dense)
            torch._foreach_add_(grads, decay, alpha=self.lambda_w)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if self.decay != "decoupled" or not self.decay_rate or not self._masks:
            return
        # pruned entries x 1/(1+rate), kept entries x 1: factor = 1/(1+rate) + M * (1 - 1/(1+rate))
        shrink = 1.0 / (1.0 + self.decay_rate)
        factors = torch._foreach_mul(self._masks, 1.0 - shrink)
        torch._foreach_add_(factors, shrink)
        torch._foreach_mul_(self.weights, factors)

    def eval_weights(self):
        """Evaluate the sparse network the forward pass uses."""
        return self.projected_weights()

    def finalize(self) -> dict[str, torch.Tensor]:
        if self._dense is not None:
            self._restore()
        return super().finalize()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lambda_w": self.lambda_w, "decay": self.decay, "decay_rate": self.decay_rate}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.lambda_w = float(state.get("lambda_w", self.lambda_w))
        self.decay = str(state.get("decay", self.decay))
        self.decay_rate = float(state.get("decay_rate", self.decay_rate))
