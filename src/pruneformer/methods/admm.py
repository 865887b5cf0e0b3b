"""ADMM towards a sparsity pattern during fine-tuning (NxMTransformer; arXiv 2407.08334).

Per target weight W, an auxiliary Z (always inside the pattern set) and a scaled dual U:

* W-step, every optimizer step: minimise task_loss(W) + rho/2 * ||W - Z + U||_F^2. The penalty is the
  *squared* Frobenius norm; its gradient rho * (W - Z + U) is added straight to W.grad after backward,
  which is exactly what autograd would give and costs one fused pass over the prunable weights.
* Z-step, every ``interval`` optimizer steps: Z = Proj(W + U), the exact projection onto the pattern.
* U-step: U = U + W - Z.

With ``penalty="decoupled"`` the penalty is not fed through the optimizer: after each optimizer step W
takes the exact proximal step of the penalty, W <- (W + rho * (Z - U)) / (1 + rho), i.e. it closes a
fraction rho / (1 + rho) of the gap to Z - U. Adam normalises gradients, so the gradient form can move a
weight by at most about one learning rate per step; on short budgets (1-2 epochs at lr 5e-5) that is too
little to reshape the weights, while the decoupled form moves them in proportion to the gap.

rho is constant or grows geometrically up to a cap; when it grows, U is rescaled by rho_old / rho_new so
the unscaled dual rho * U is unchanged. The primal residual ||W - Z|| / ||W|| is logged at
every Z-step: it must fall; if it keeps growing the run stops with a message instead of silently
producing a model that hard-pruning will wreck.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Mapping

import torch

from ..errors import DivergenceError
from .base import PruningMethod


#: rho above this is blamed when a run goes non-finite (a hundred times rho_max's default).
RHO_FAR_TOO_LARGE = 10.0


class ADMMPruner(PruningMethod):
    """ADMM W/Z/U splitting towards ``pattern``; ``finalize`` hard-prunes W to Proj(W)."""

    name: ClassVar[str] = "admm"

    def __init__(
        self,
        pattern,
        rho: float = 1e-3,
        rho_schedule: Literal["constant", "geometric"] = "geometric",
        rho_factor: float = 1.3,
        rho_max: float = 0.1,
        interval: int = 100,
        divergence_factor: float = 10.0,
        penalty: Literal["gradient", "decoupled"] = "gradient",
    ) -> None:
        super().__init__(pattern)
        if rho <= 0 or interval < 1:
            raise ValueError("rho must be > 0 and interval >= 1")
        self.rho = float(rho)
        self.rho_schedule = rho_schedule
        self.rho_factor = float(rho_factor)
        self.rho_max = float(rho_max)
        self.interval = int(interval)
        self.divergence_factor = float(divergence_factor)
        if penalty not in ("gradient", "decoupled"):
            raise ValueError("penalty must be 'gradient' or 'decoupled'")
        self.penalty = penalty
        self.steps = 0
        self.Z: list[torch.Tensor] = []
        self.U: list[torch.Tensor] = []

    def attach(self, model, targets) -> None:  # type: ignore[override]
        super().attach(model, targets)
        with torch.no_grad():
            self.Z = [self.pattern.project(w.detach()) for w in self.weights]
            self.U = [torch.zeros_like(w) for w in self.weights]
        self.history = [self._residuals(update=0, previous_z=None)]

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        weights, grads = self.weights, self.grads
        if self.penalty != "gradient" or any(g is None for g in grads):
            return
        direction = torch._foreach_sub([w.detach() for w in weights], self.Z)
        torch._foreach_add_(direction, self.U)
        torch._foreach_add_(grads, direction, alpha=self.rho)

    def after_optimizer_step(self, step: int) -> None:
        if self.penalty == "decoupled":
            with torch.no_grad():
                weights = self.weights
                target = torch._foreach_sub(self.Z, self.U)
                torch._foreach_add_(weights, target, alpha=self.rho)
                torch._foreach_div_(weights, 1.0 + self.rho)
        self.steps += 1
        if self.steps % self.interval == 0:
            self.update_auxiliaries()

    @torch.no_grad()
    def update_auxiliaries(self) -> dict[str, float]:
        """One Z-step and U-step, then the rho schedule; returns the logged residuals."""
        previous_z = self.Z
        w_plus_u = torch._foreach_add([w.detach() for w in self.weights], self.U)
        self.Z = [self.pattern.project(v) for v in w_plus_u]
        torch._foreach_add_(self.U, torch._foreach_sub([w.detach() for w in self.weights], self.Z))
        record = self._residuals(update=len(self.history), previous_z=previous_z)
        self.history.append(record)
        self._check_divergence(record)
        if self.rho_schedule == "geometric":
            new_rho = min(self.rho * self.rho_factor, self.rho_max)
            # U is the *scaled* dual y / rho: keep y fixed when rho changes (Boyd et al. 2011, 3.4.1),
            # otherwise U is too large by the accumulated growth and W overshoots past Z.
            torch._foreach_mul_(self.U, self.rho / new_rho)
            self.rho = new_rho
        return record

    def _residuals(self, update: int, previous_z: list[torch.Tensor] | None) -> dict[str, float]:
        w_norm = math.sqrt(sum(float(w.detach().float().pow(2).sum()) for w in self.weights)) or 1.0
        primal = math.sqrt(
            sum(float((w.detach() - z).float().pow(2).sum()) for w, z in zip(self.weights, self.Z))
        )
        dual = (
            self.rho * math.sqrt(sum(float((z - p).float().pow(2).sum()) for z, p in zip(self.Z, previous_z)))
            if previous_z is not None
            else 0.0
        )
        u_norm = math.sqrt(sum(float(u.float().pow(2).sum()) for u in self.U))
        return {
            "update": update,
            "step": self.steps,
            "rho": self.rho,
            "primal_residual": primal / w_norm,
            "dual_residual": dual / w_norm,
            "u_norm": u_norm,
        }

    def _check_divergence(self, record: dict[str, float]) -> None:
        residual = record["primal_residual"]
        if not math.isfinite(residual) or not math.isfinite(record["u_norm"]):
            raise DivergenceError(
                f"ADMM diverged: primal residual is {residual} at update {record['update']}.",
                "lower the learning rate or rho (e.g. --rho 1e-4), or use --rho-schedule constant",
            )
        first = self.history[1]["primal_residual"] if len(self.history) > 1 else None
        if first and len(self.history) > 3 and residual > self.divergence_factor * first:
            raise DivergenceError(
                f"ADMM is not converging: the primal residual ||W-Z||/||W|| grew from {first:.3g} to "
                f"{residual:.3g} over {record['update']} updates (rho={self.rho:.3g}).",
                "raise rho or rho_max so W is pulled towards Z, or lower the learning rate",
            )

    def convergence_warning(self) -> str | None:
        """A sentence for the user when the residual did not fall over the run, else None."""
        if len(self.history) < 3:
            return None
        first, last = self.history[1]["primal_residual"], self.history[-1]["primal_residual"]
        if last < 0.9 * first:
            return None
        return (f"ADMM did not converge: the primal residual went from {first:.3g} to {last:.3g} over "
                f"{len(self.history) - 1} Z/U updates, so the hard prune discards what ADMM did not shrink. "
                "Give ADMM more steps (admm.epochs), raise rho / rho_max, or use admm.penalty: decoupled.")

    def divergence_hint(self) -> tuple[str, str] | None:
        """rho far above the papers' range (1e-3 to 1e-1) is the likely cause of a non-finite run."""
        if self.rho <= RHO_FAR_TOO_LARGE:
            return None
        return (f"ADMM's rho ({self.rho:.3g}) is far too large: the papers use 1e-3 to 1e-1, and a huge penalty "
                "rho * (W - Z + U) overflows the gradients and weights",
                "lower --rho (e.g. 1e-3) and --rho-max (e.g. 0.1)")

    def eval_weights(self):
        """Evaluate on the hard-projected weights (what pruning now would give), then restore."""
        return self.projected_weights()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "Z": {n: z.clone() for n, z in zip(self.names, self.Z)},
            "U": {n: u.clone() for n, u in zip(self.names, self.U)},
            "rho": self.rho,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.Z = [state["Z"][n].to(w.device, w.dtype) for n, w in zip(self.names, self.weights)]
        self.U = [state["U"][n].to(w.device, w.dtype) for n, w in zip(self.names, self.weights)]
        self.rho = float(state["rho"])
        self.steps = int(state["steps"])
