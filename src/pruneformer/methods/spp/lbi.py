"""The differential inclusion behind SPP: a linearized Bregman iteration (DessiLBI form) on vectors.

Each parameter vector ``a`` (SPP's masks; init 1) gets an auxiliary ``z`` (init 0) and a sparse twin
``gamma`` (init 0). With loss L and step size alpha, one iteration is::

    a     <- a - kappa * alpha * grad_a( L(a) + ||a - gamma||^2 / (2 nu) )
    z     <- z + alpha * (a - gamma) / nu
    gamma <- kappa * shrink(z, lambda)          shrink(z, l) = sign(z) * max(|z| - l, 0)

``gamma`` starts empty and gains coordinates one after another as ``|z|`` crosses ``lambda``: that order
is the regularisation path. The *entry time* of each coordinate (the iteration at which its gamma first
became non-zero) is all SPP needs to cut a model at any ratio afterwards.

The coupling term ``||a - gamma||^2 / (2 nu)`` must act through the gradient of ``a``. SPP's released
code adds it to the loss *after* ``backward()``, so it never reaches ``a.grad`` and the masks are never
pulled towards the sparse path. Here :meth:`coupling_loss` is meant to be added to the loss *before*
``backward()`` (the training loop's ``loss_term`` hook does exactly that), and :meth:`step_masks` /
:meth:`step_path` do the rest. The class is plain tensors, so the same code runs on SPP's masks and on
the synthetic sparse regression the tests use.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


def shrink(z: torch.Tensor, lam: float) -> torch.Tensor:
    """Soft thresholding: the proximal map of lam * |.|_1."""
    return torch.sign(z) * torch.clamp(z.abs() - lam, min=0.0)


class LinearizedBregman:
    """DessiLBI state for a named set of vectors; ``a`` are ``nn.Parameter`` so autograd reaches them."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], *, kappa: float = 1.0, nu: float = 100.0,
                 lam: float = 1.0, alpha: float = 1.0, init: float = 1.0,
                 device: torch.device | str | None = None) -> None:
        if kappa <= 0 or nu <= 0 or lam < 0 or alpha <= 0:
            raise ValueError("kappa, nu and alpha must be > 0 and lambda >= 0")
        self.kappa, self.nu, self.lam, self.alpha = float(kappa), float(nu), float(lam), float(alpha)
        self.a = {k: nn.Parameter(torch.full(s, float(init), device=device)) for k, s in shapes.items()}
        self.z = {k: torch.zeros(s, device=device) for k, s in shapes.items()}
        self.gamma = {k: torch.zeros(s, device=device) for k, s in shapes.items()}
        #: iteration at which each coordinate's gamma first became non-zero; -1 = not (yet) on the path.
        self.entry = {k: torch.full(s, -1, dtype=torch.long, device=device) for k, s in shapes.items()}
        self.steps = 0

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.a.values())

    def coupling_loss(self) -> torch.Tensor:
        """sum ||a - gamma||^2 / (2 nu): add it to the loss before backward so it acts through grad_a."""
        return sum(((a - self.gamma[k]) ** 2).sum() for k, a in self.a.items()) / (2.0 * self.nu)

    @torch.no_grad()
    def step_masks(self) -> None:
        """a <- a - kappa * alpha * a.grad (the gradient already holds the coupling term), then clear it."""
        for a in self.a.values():
            if a.grad is not None:
                a.sub_(a.grad, alpha=self.kappa * self.alpha)
                a.grad = None

    @torch.no_grad()
    def step_path(self) -> int:
        """z and gamma updates; returns how many coordinates entered the path at this iteration."""
        self.steps += 1
        entered = 0
        for k, a in self.a.items():
            self.z[k].add_(a.detach() - self.gamma[k], alpha=self.alpha / self.nu)
            self.gamma[k] = self.kappa * shrink(self.z[k], self.lam)
            new = (self.gamma[k] != 0) & (self.entry[k] < 0)
            self.entry[k][new] = self.steps
            entered += int(new.sum())
        return entered

    def support_size(self) -> int:
        return sum(int((g != 0).sum()) for g in self.gamma.values())

    def state_dict(self) -> dict[str, Any]:
        return {"a": {k: v.detach().clone() for k, v in self.a.items()},
                "z": {k: v.clone() for k, v in self.z.items()},
                "gamma": {k: v.clone() for k, v in self.gamma.items()},
                "entry": {k: v.clone() for k, v in self.entry.items()}, "lbi_steps": self.steps}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k in self.a:  # in place: the optimizer (AdamW mode) keeps pointing at the same Parameters
            self.a[k].copy_(state["a"][k])
            self.z[k].copy_(state["z"][k])
            self.gamma[k] = state["gamma"][k].to(self.z[k].device).clone()
            self.entry[k].copy_(state["entry"][k])
        self.steps = int(state["lbi_steps"])
