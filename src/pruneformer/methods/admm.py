"""ADMM towards a sparsity pattern during fine-tuning (NxMTransformer; arXiv 2407.08334).

Per target weight W, an auxiliary Z (always inside the pattern set) and a scaled dual U:

* W-step, every optimizer step: minimise task_loss(W) + rho/2 * ||W - Z + U||_F^2.
* Z-step, every ``interval`` optimizer steps: Z = Proj(W + U), the exact projection onto the pattern.
* U-step: U = U + W - Z.

How the W-step sees the penalty (``penalty``):

* ``decoupled`` (default): the optimizer sees only the task loss; after each optimizer step W takes the
  exact proximal step of the penalty, W <- (W + rho (Z - U)) / (1 + rho), closing a known fraction
  rho / (1 + rho) of the gap to Z - U. Adam normalises gradients, so a gradient-form penalty moves a weight
  by at most about one learning rate per step whatever rho is (at lr 5e-5 the median 2:4 weight to remove
  needs hundreds of steps); the proximal step does not depend on Adam's normalisation.
* ``gradient``: rho (W - Z + U) is added to W.grad *after* gradient clipping (``before_optimizer_step``),
  so a large penalty never scales the task gradient down with it.

How far the pull reaches per step (``pull``): with ``fixed`` the decoupled step closes rho / (1 + rho) of
the gap every optimizer step whatever the learning rate (~45% per 30-step interval at rho 0.02, all inside the
warmup, while AdamW at lr 5e-5 moves a weight ~1.5e-3 against a median kept-vs-pruned gap of ~0.014 in a
MiniLM 2:4 group), so the mask cannot move and ADMM ends on one-shot magnitude's. With ``lr`` it is the
proximal step of the penalty *at the step's learning rate* eta (as AdamW decouples weight decay):
W <- (W + eta rho (Z - U)) / (1 + eta rho), rho in 1 / lr units (tens balance Adam's step early, thousands
converge late), and the dual moves as far as the pull could: U <- U + c (W - Z), c = 1 - prod(1 - f_t) the
share of the gap the interval closed. A full dual step after a W-step that closed little of the gap is what
made groups flip at one update and back at the next (a pruned weight's U grows by the whole weight each
update while the weight hardly moves, so |W + U| overtakes its kept partner; ``flipped_back`` counts it).

Which weights Z keeps (``score``): ``magnitude`` ranks |W + U| (the papers'); ``fisher`` ranks
|W + U| x sqrt(F), F the running mean of squared gradients (Adam's second moment, computed here from the
clipped, rank-reduced gradients so every rank agrees): the optimal-brain-damage saliency, activation- and
curvature-aware like the layer-wise solvers' scores, so the first mask is not magnitude's. The hard prune
uses the same score on W.

rho follows a continuation: ``constant``, ``geometric`` (x ``rho_factor`` per Z-step up to ``rho_max``) or
``balanced`` (Boyd et al. 2011, 3.4.1: x ``rho_factor`` when the primal residual is ten times the dual,
/ ``rho_factor`` in the opposite case). Whenever rho changes, U is rescaled by rho_old / rho_new so the
unscaled dual rho U is unchanged.

Each Z-step logs what shows whether ADMM works (``history``): the primal residual ||W - Z|| / ||W||
(it must fall below ``target_residual`` before the hard prune, else the prune discards what ADMM did not
shrink), the dual residual, ||Z_k - Z_(k-1)|| / ||W||, the fraction of pattern groups whose kept set
changed, the agreement of Z's kept set with one-shot magnitude pruning of the starting weights (above
~99.5% ADMM collapsed to magnitude and only cost budget), and, every ``eval_every`` updates, the dev score
of Proj(W) (the training loop evaluates when :meth:`eval_requested` says so).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Mapping

import torch

from ..core.patterns import compute_masks
from ..errors import DivergenceError, PruneformerError
from .admm_config import resolve_rho
from .base import PruningMethod

#: rho above this is blamed when a run goes non-finite (a hundred times rho_max's default).
RHO_FAR_TOO_LARGE = 10.0
#: residual balancing (Boyd et al. 2011, 3.4.1): rho moves when one residual is this many times the other.
BALANCE_MU = 10.0
#: decay of the running mean of squared gradients the ``fisher`` score uses (Adam's beta2).
FISHER_BETA = 0.999
def continuation_factor(rho: float, rho_max: float, steps: int, interval: int, reach: float = 0.6) -> float:
    """The geometric rho factor that takes rho to rho_max after ``reach`` of the phase's Z/U updates, so the
    last updates run at full pull and the primal residual is near zero at the hard prune."""
    updates = max(1, round(reach * (steps // interval)))
    return max(1.0, (rho_max / rho) ** (1.0 / updates))


class ADMMPruner(PruningMethod):
    """ADMM W/Z/U splitting towards ``pattern``; ``finalize`` hard-prunes W to Proj(W)."""

    name: ClassVar[str] = "admm"

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None, steps: int = 0) -> "ADMMPruner":
        """From ``recipe.admm``; without a ``rho_factor`` the continuation fits the phase's ``steps``."""
        a = recipe.admm
        rho, rho_max = resolve_rho(a.pull, a.penalty, a.rho, a.rho_max)
        factor = a.rho_factor or continuation_factor(rho, rho_max, steps, a.interval)
        return cls(recipe.prune.pattern, rho=rho, rho_schedule=a.rho_schedule, rho_factor=factor,
                   rho_max=rho_max, interval=a.interval, penalty=a.penalty, pull=a.pull, score=a.score,
                   target_residual=a.target_residual, eval_every=a.eval_every)

    def __init__(
        self,
        pattern,
        rho: float | None = None,
        rho_schedule: Literal["constant", "geometric", "balanced"] = "geometric",
        rho_factor: float = 1.3,
        rho_max: float | None = None,
        interval: int = 30,
        divergence_factor: float = 10.0,
        penalty: Literal["gradient", "decoupled"] = "decoupled",
        target_residual: float = 0.05,
        eval_every: int = 0,
        pull: Literal["fixed", "lr"] = "fixed",
        score: Literal["magnitude", "fisher"] = "magnitude",
    ) -> None:
        super().__init__(pattern)
        if pull not in ("fixed", "lr") or score not in ("magnitude", "fisher"):
            raise ValueError("pull must be 'fixed' or 'lr', score 'magnitude' or 'fisher'")
        if penalty not in ("gradient", "decoupled"):
            raise ValueError("penalty must be 'gradient' or 'decoupled'")
        rho, rho_max = resolve_rho(pull, penalty, rho, rho_max)
        if rho <= 0 or interval < 1:
            raise ValueError("rho must be > 0 and interval >= 1")
        if rho_schedule not in ("constant", "geometric", "balanced"):
            raise ValueError("rho_schedule must be 'constant', 'geometric' or 'balanced'")
        self.rho = float(rho)
        self.rho_schedule = rho_schedule
        self.rho_factor = float(rho_factor)
        self.rho_max = float(rho_max)
        self.interval = int(interval)
        self.divergence_factor = float(divergence_factor)
        self.penalty = penalty
        self.target_residual = float(target_residual)
        self.eval_every = int(eval_every)
        self.pull, self.score = pull, score
        self.lr: float | None = None  # the learning rate of the step being taken (``set_learning_rate``)
        self.interval_keep = 1.0  # prod(1 - f_t) over the steps since the last Z/U update
        self.fisher: list[torch.Tensor] = []  # running mean of squared gradients (``score`` 'fisher')
        self.fisher_steps = 0
        self.older_masks: list[torch.Tensor] = []  # Z's kept set two updates back (flip-back diagnostic)
        self.steps = 0
        self.Z: list[torch.Tensor] = []
        self.U: list[torch.Tensor] = []
        self.z_masks: list[torch.Tensor] = []  # Z's kept set, for the mask-change diagnostic
        self.start_masks: list[torch.Tensor] = []  # one-shot magnitude masks of the starting weights
        self.eval_pending = False
        self.pull_target: list[torch.Tensor] = []  # Z - U, cached between updates (the decoupled W-step's target)

    def attach(self, model, targets) -> None:  # type: ignore[override]
        super().attach(model, targets)
        with torch.no_grad():
            self.start_masks = [self.pattern.mask(w.detach()) for w in self.weights]
            self.z_masks = [m.clone() for m in self.start_masks]
            self.Z = [w.detach().masked_fill(~m, 0) for w, m in zip(self.weights, self.start_masks)]
            self.U = [torch.zeros_like(w) for w in self.weights]
        self.pull_target = []
        self.older_masks, self.fisher, self.fisher_steps, self.interval_keep = [], [], 0, 1.0
        self.history = [self.diagnostics(update=0, previous_z=None, previous_masks=None)]

    def set_learning_rate(self, lr: float) -> None:
        self.lr = float(lr)

    def pull_fraction(self) -> float:
        """The share of the gap to Z - U the decoupled W-step closes at this optimizer step."""
        if self.pull == "fixed":
            return self.rho / (1.0 + self.rho)
        if self.lr is None:
            raise PruneformerError("ADMM with pull 'lr' was never told the learning rate of its steps.",
                                   "call method.set_learning_rate(optimizer.param_groups[0]['lr']) before every "
                                   "optimizer.step() (pruneformer's loop and PruningCallback do), or use pull 'fixed'")
        step = self.lr * self.rho
        return step / (1.0 + step)

    def _scores(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """What Z keeps the largest of in each group: |v|, or |v| x sqrt(F) (``score`` 'fisher')."""
        if self.score == "magnitude" or not self.fisher_steps:
            return values
        scores = []
        for value, fisher in zip(values, self.fisher):
            root = fisher.sqrt()
            # a weight no gradient reached yet keeps its magnitude's rank instead of scoring zero
            scores.append(value.abs() * (root + 1e-3 * root.mean() + torch.finfo(root.dtype).tiny))
        return scores

    def current_masks(self) -> dict[str, torch.Tensor]:
        """The hard prune's masks: the Z-step's score applied to W itself (|W| for ``magnitude``)."""
        with torch.no_grad():
            return compute_masks(self.pattern, dict(zip(self.names, self._scores([w.detach() for w in self.weights]))))

    def finalize(self) -> dict[str, torch.Tensor]:
        masks = super().finalize()
        if self.history:  # how far the hard prune's mask moved from one-shot magnitude's of the start
            self.history[-1]["final_magnitude_agreement"] = self._agreement(
                [masks[n] for n in self.names], self.start_masks)
        return masks

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        weights, grads = self.weights, self.grads
        if any(g is None for g in grads):
            return
        if self.score == "fisher":  # before the penalty's own gradient is added: the task's curvature only
            if not self.fisher:
                self.fisher = [torch.zeros_like(w) for w in weights]
            torch._foreach_mul_(self.fisher, FISHER_BETA)
            torch._foreach_addcmul_(self.fisher, grads, grads, value=1.0 - FISHER_BETA)
            self.fisher_steps += 1
        if self.penalty != "gradient":
            return
        direction = torch._foreach_sub([w.detach() for w in weights], self.Z)
        torch._foreach_add_(direction, self.U)
        torch._foreach_add_(grads, direction, alpha=self.rho)

    def adds_gradient_after_clipping(self) -> bool:
        return self.penalty == "gradient"

    def after_optimizer_step(self, step: int) -> None:
        if self.penalty == "decoupled":
            with torch.no_grad():  # (W + rho (Z - U)) / (1 + rho), one fused pass; Z - U only moves at updates
                if len(self.pull_target) != len(self.Z):
                    self.pull_target = torch._foreach_sub(self.Z, self.U)
                fraction = self.pull_fraction()
                torch._foreach_lerp_(self.weights, self.pull_target, fraction)
                self.interval_keep *= 1.0 - fraction
        self.steps += 1
        if self.steps % self.interval == 0:
            self.update_auxiliaries()

    @torch.no_grad()
    def update_auxiliaries(self) -> dict[str, float]:
        """One Z-step and U-step, then the rho schedule; returns the logged diagnostics."""
        previous_z, previous_masks = self.Z, self.z_masks
        w_plus_u = torch._foreach_add([w.detach() for w in self.weights], self.U)
        self.z_masks = [self.pattern.mask(s) for s in self._scores(w_plus_u)]
        self.Z = [v.masked_fill(~m, 0) for v, m in zip(w_plus_u, self.z_masks)]
        closed = 1.0 if self.pull == "fixed" else 1.0 - self.interval_keep  # the dual moves as far as the pull
        torch._foreach_add_(self.U, torch._foreach_sub([w.detach() for w in self.weights], self.Z), alpha=closed)
        self.interval_keep = 1.0
        record = self.diagnostics(update=len(self.history), previous_z=previous_z, previous_masks=previous_masks)
        record["dual_step"] = closed
        self.older_masks = previous_masks
        self.history.append(record)
        self._check_divergence(record)
        self._schedule_rho(record)
        self.pull_target = []
        self.eval_pending = bool(self.eval_every) and record["update"] % self.eval_every == 0
        return record

    def _schedule_rho(self, record: Mapping[str, float]) -> None:
        new_rho = self.rho
        if self.rho_schedule == "geometric":
            new_rho = self.rho * self.rho_factor
        elif self.rho_schedule == "balanced":
            primal, dual = record["primal_residual"], record["dual_residual"]
            if primal > BALANCE_MU * dual:
                new_rho = self.rho * self.rho_factor
            elif dual > BALANCE_MU * primal:
                new_rho = self.rho / self.rho_factor
        new_rho = min(new_rho, self.rho_max)
        if new_rho != self.rho:
            # U is the *scaled* dual y / rho: keep y fixed when rho changes (Boyd et al. 2011, 3.4.1),
            # otherwise U is off by the accumulated change and W overshoots past Z.
            torch._foreach_mul_(self.U, self.rho / new_rho)
            self.rho = new_rho

    def diagnostics(self, update: int, previous_z: list[torch.Tensor] | None,
                    previous_masks: list[torch.Tensor] | None) -> dict[str, float]:
        """The record of one Z/U update (see the module docstring)."""
        def norm(tensors) -> float:
            return math.sqrt(sum(float(t.float().pow(2).sum()) for t in tensors))

        weights = [w.detach() for w in self.weights]
        w_norm = norm(weights) or 1.0
        z_change = norm(z - p for z, p in zip(self.Z, previous_z)) / w_norm if previous_z is not None else 0.0
        record = {
            "update": update,
            "step": self.steps,
            "rho": self.rho,
            "primal_residual": norm(w - z for w, z in zip(weights, self.Z)) / w_norm,
            "dual_residual": self._rho_per_step() * z_change,
            "z_change": z_change,
            "u_norm": norm(self.U),
            "mask_changed": 1.0 - self._agreement(self.z_masks, previous_masks) if previous_masks else 0.0,
            "magnitude_agreement": self._agreement(self.z_masks, self.start_masks),
            "flipped_back": self._flipped_back(previous_masks) if previous_masks and self.older_masks else 0.0,
        }
        return record

    def _rho_per_step(self) -> float:
        """rho as one optimizer step applies it: rho itself (``fixed``), or lr x rho (``lr``)."""
        return self.rho * (self.lr or 0.0) if self.pull == "lr" else self.rho

    def _flipped_back(self, previous_masks: list[torch.Tensor]) -> float:
        """Share of groups whose kept set changed at this update back to what it was one update earlier:
        the signature of a dual oscillation (a learning mask moves on; an oscillating one returns)."""
        back = total = 0
        for now, previous, older in zip(self.z_masks, previous_masks, self.older_masks):
            returned = self.pattern.groups_same(now, older) & ~self.pattern.groups_same(now, previous)
            back, total = back + int(returned.sum()), total + returned.numel()
        return back / total if total else 0.0

    def _agreement(self, masks: list[torch.Tensor], others: list[torch.Tensor]) -> float:
        """Fraction of pattern groups (over all targets) whose kept set is the same in both mask lists."""
        same = total = 0
        for a, b in zip(masks, others):
            s, t = self.pattern.groups_equal(a, b)
            same, total = same + s, total + t
        return same / total if total else 1.0

    def eval_requested(self) -> bool:
        pending, self.eval_pending = self.eval_pending, False
        return pending

    def record_eval(self, scores: Mapping[str, float]) -> None:
        """Attach the dev scores of Proj(W) to the newest update's record."""
        if self.history:
            self.history[-1].update({f"proj_dev_{k}": float(v) for k, v in scores.items()})

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

    def converged(self) -> bool:
        """True when the newest primal residual is below ``target_residual``: the hard prune costs ~nothing."""
        return bool(self.history) and self.history[-1]["primal_residual"] <= self.target_residual

    def convergence_warning(self) -> str | None:
        """A sentence for the user when the residual is still above the target at the hard prune, else None."""
        if len(self.history) < 2 or self.converged():
            return None
        first, last = self.history[0]["primal_residual"], self.history[-1]["primal_residual"]
        fix = ("use admm.penalty: decoupled" if self.penalty == "gradient" else
               "raise admm.rho_max or admm.rho_factor, or give ADMM more steps (admm.epochs)")
        return (f"ADMM did not converge: the primal residual ||W-Z||/||W|| went from {first:.3g} to {last:.3g} "
                f"over {len(self.history) - 1} Z/U updates, above the target {self.target_residual:g}, so the "
                f"hard prune discards what ADMM did not shrink. Fix: {fix}.")

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
            "z_masks": {n: m.clone() for n, m in zip(self.names, self.z_masks)},
            "start_masks": {n: m.clone() for n, m in zip(self.names, self.start_masks)},
            "older_masks": {n: m.clone() for n, m in zip(self.names, self.older_masks)},
            "fisher": {n: f.clone() for n, f in zip(self.names, self.fisher)},
            "fisher_steps": self.fisher_steps,
            "interval_keep": self.interval_keep,
            "lr": self.lr,
            "rho": self.rho,
            "steps": self.steps,
            "eval_pending": self.eval_pending,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.Z = [state["Z"][n].to(w.device, w.dtype) for n, w in zip(self.names, self.weights)]
        self.U = [state["U"][n].to(w.device, w.dtype) for n, w in zip(self.names, self.weights)]
        z_masks, start_masks = state.get("z_masks"), state.get("start_masks")
        if z_masks is not None and start_masks is not None:
            self.z_masks = [z_masks[n].to(w.device, torch.bool) for n, w in zip(self.names, self.weights)]
            self.start_masks = [start_masks[n].to(w.device, torch.bool) for n, w in zip(self.names, self.weights)]
        def by_name(key: str, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
            saved = state.get(key) or {}
            return [saved[n].to(w.device, dtype or w.dtype) for n, w in zip(self.names, self.weights)] if saved else []

        self.older_masks, self.fisher = by_name("older_masks", torch.bool), by_name("fisher")
        self.fisher_steps = int(state.get("fisher_steps", 0))
        self.interval_keep = float(state.get("interval_keep", 1.0))
        self.lr = state.get("lr")
        self.rho = float(state["rho"])
        self.steps = int(state["steps"])
        self.pull_target = []
        self.eval_pending = bool(state.get("eval_pending", False))
