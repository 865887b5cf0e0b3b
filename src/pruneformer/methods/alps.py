"""ALPS: one-shot pruning of a Linear by ADMM on its layer-wise reconstruction problem (Meng et al.,
NeurIPS 2024, arXiv 2406.07831), written for every pattern the project has.

For a Linear with dense weight ``W0`` and calibration inputs ``X`` (rows are tokens; padding never enters,
see :mod:`pruneformer.train.calibration`), the pruned weight minimises the output error

    f(W) = tr((W - W0) H (W - W0)^T),   H = X^T X + lambda I,   subject to W in the pattern.

Why ADMM here and not during fine-tuning: the problem is a convex quadratic plus a projection, so the
split ``W = D`` (D in the pattern) converges in tens of iterations and chooses its mask on the data's
reconstruction error, not on ``|W|`` alone. The iteration, in coordinates scaled by
``d = sqrt(diag(H))`` (so ``H`` has a unit diagonal and ``|W * d|`` is Wanda's score):

    W <- (W0 H - V + rho D) (H + rho I)^-1     one eigendecomposition of H, reused for every rho
    D <- Proj(W + V / rho)                     the pattern's exact projection (top-N per group)
    V <- V + rho (W - D)

``rho`` starts small (0.1) and grows by how much the support still changes (x1.3 while more than 10% of
the kept entries move per check, x1.2 above 0.5%, x1.1 otherwise), which drives ``W`` and ``D`` together;
the iteration stops when the support stops changing (or after ``max_iter``). The final support is then
fixed and the kept weights re-fitted by conjugate gradient, so the layer is the least-squares optimum on
its mask. Relative errors ``f(W) / f(0)`` of ALPS, SparseGPT and magnitude on the same Gram matrix are kept
per layer in :attr:`ALPSPruner.diagnostics` (``compare=False`` skips the two baselines).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from ..core.patterns import Pattern
from .calibrated import CalibratedPruner
from .sparsegpt import SparseGPTPruner


def relative_error(weight: torch.Tensor, dense: torch.Tensor, gram: torch.Tensor) -> float:
    """``tr((W - W0) H (W - W0)^T) / tr(W0 H W0^T)``: the share of the layer's output energy that is lost."""
    diff = weight - dense
    lost = ((diff @ gram) * diff).sum()
    total = ((dense @ gram) * dense).sum()
    return float(lost / total) if float(total) > 0 else 0.0


def refit_on_support(gram: torch.Tensor, target: torch.Tensor, start: torch.Tensor, mask: torch.Tensor,
                     iterations: int = 50, rtol: float = 1e-5) -> torch.Tensor:
    """Least squares on a fixed support: every row ``w`` solves ``H_SS w_S = (W0 H)_S`` by conjugate gradient.

    ``target`` is ``W0 H`` ``[out, in]``; rows are independent systems run as one batch (each with its own
    step sizes), and entries outside ``mask`` stay exactly zero.
    """
    keep = mask.to(start.dtype)
    w = start * keep
    residual = (target - w @ gram) * keep
    direction = residual.clone()
    rr = (residual * residual).sum(dim=1)
    stop = rtol * rtol * (target * target * keep).sum(dim=1).clamp_min(1e-30)
    for _ in range(iterations):
        if bool((rr <= stop).all()):
            break
        hd = (direction @ gram) * keep
        curvature = (direction * hd).sum(dim=1)
        alpha = torch.where(curvature > 0, rr / curvature.clamp_min(1e-30), torch.zeros_like(rr))
        w = w + alpha.unsqueeze(1) * direction
        residual = residual - alpha.unsqueeze(1) * hd
        rr_new = (residual * residual).sum(dim=1)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr))
        direction = residual + beta.unsqueeze(1) * direction
        rr = rr_new
    return w * keep


class ALPSPruner(CalibratedPruner):
    """Prune each target to the pattern by ADMM on its reconstruction error, then re-fit the kept weights."""

    name: ClassVar[str] = "alps"

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None, steps: int = 0) -> "ALPSPruner":
        c = recipe.calibration
        return cls(recipe.prune.pattern, dampening=c.dampening, rho=c.alps_rho, max_iter=c.alps_max_iter)

    def __init__(self, pattern: Pattern | str, dampening: float = 0.01, rho: float = 0.1, max_iter: int = 300,
                 check_every: int = 3, refit_iterations: int = 50, compare: bool = True) -> None:
        super().__init__(pattern)
        if dampening < 0 or rho <= 0 or max_iter < 1 or check_every < 1:
            raise ValueError("ALPS needs dampening >= 0, rho > 0, max_iter >= 1 and check_every >= 1")
        self.dampening = float(dampening)
        self.rho = float(rho)
        self.max_iter = int(max_iter)
        self.check_every = int(check_every)
        self.refit_iterations = int(refit_iterations)
        self.compare = bool(compare)
        self.diagnostics: dict[str, dict[str, Any]] = {}
        self._current: str | None = None

    def accumulate(self, stats: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
        gram = inputs.t() @ inputs
        return gram if stats is None else stats.add_(gram)

    def prune_target(self, target) -> None:  # type: ignore[override]
        self._current = target.name
        super().prune_target(target)

    def solve(self, weight: torch.Tensor, stats: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        gram = stats.double()
        gram.diagonal().add_(self.dampening * float(gram.diagonal().mean()) + 1e-12)
        scale = gram.diagonal().sqrt()
        normalised = gram / scale.unsqueeze(0) / scale.unsqueeze(1)  # unit diagonal: rho means the same everywhere
        eigenvalues, eigenvectors = torch.linalg.eigh(normalised)
        h = normalised.float()
        q, lam = eigenvectors.float(), eigenvalues.float().clamp_min(0)
        dense = weight * scale.float().unsqueeze(0)
        target = dense @ h

        def project(w: torch.Tensor) -> torch.Tensor:
            return self.pattern.mask(w.abs())

        rho = self.rho
        support = project(dense)
        d = dense.masked_fill(~support, 0)
        v = torch.zeros_like(dense)
        w = dense
        kept = max(1, int(support.sum()))
        grew, iterations, change = False, 0, 0.0
        for iterations in range(1, self.max_iter + 1):
            w = ((target - v + rho * d) @ q / (lam + rho)) @ q.t()
            new_support = project(w + v / rho)
            d = (w + v / rho).masked_fill(~new_support, 0)
            v = v + rho * (w - d)
            if iterations % self.check_every:
                continue
            change = float((new_support != support).sum()) / kept
            support = new_support
            if change > 0.1:
                rho, grew = rho * 1.3, True
            elif change > 0.005:
                rho, grew = rho * 1.2, True
            elif change > 0:
                rho = rho * 1.1 if grew else rho
            elif grew or iterations >= 30:
                break  # the support has stopped moving
            rho = min(rho, 1e6)
        mask = project(w)
        pruned = refit_on_support(h, target, w.masked_fill(~mask, 0), mask, self.refit_iterations)
        result = pruned / scale.float().unsqueeze(0)
        self._record(weight, result, mask, stats, tokens, iterations, change, rho)
        return result, mask

    def _record(self, weight: torch.Tensor, result: torch.Tensor, mask: torch.Tensor, gram: torch.Tensor,
                tokens: int, iterations: int, change: float, rho: float) -> None:
        """Per-layer diagnostics: iterations, last support change, final rho and relative errors."""
        gram = gram.float()
        row = {"tokens": tokens, "iterations": iterations, "support_change": change, "rho": rho,
               "error": relative_error(result, weight, gram)}
        if self.compare:
            magnitude = weight.masked_fill(~self.pattern.mask(weight), 0)
            row["magnitude_error"] = relative_error(magnitude, weight, gram)
            sparsegpt, keep = SparseGPTPruner(self.pattern, dampening=self.dampening).solve(weight, gram.clone(), tokens)
            row["sparsegpt_error"] = relative_error(sparsegpt.masked_fill(~keep, 0), weight, gram)
        self.diagnostics[self._current or f"layer{len(self.diagnostics)}"] = row
        self.history.append({"layer": self._current, **row})
