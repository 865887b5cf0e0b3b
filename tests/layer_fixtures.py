"""One Linear pruned by a calibrated method, and the inputs that make reconstruction matter: shared by the
tests of SparseGPT, Wanda and ALPS."""

from __future__ import annotations

import torch
from torch import nn

from pruneformer.core.targets import Target


def prune_linear(method, weight: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Prune one Linear holding ``weight`` with ``method`` calibrated on ``inputs``; the pruned weight."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    target = Target("layer", linear, "ffn_in", 0)
    method.attach(linear, [target])
    if method.calibrates:
        for chunk in inputs.split(100):
            method.observe(target, chunk)
        method.prune_target(target)
    method.finalize()
    return linear.weight.detach()


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return float((inputs @ (weight - pruned).t()).pow(2).sum())


def correlated_inputs(tokens: int, features: int, seed: int) -> torch.Tensor:
    """Inputs with correlated features of unequal scales (where SparseGPT's weight update pays off)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.eye(features) + torch.randn(features, features, generator=g) / features**0.5
    scales = torch.exp(0.5 * torch.randn(features, generator=g))
    return (torch.randn(tokens, features, generator=g) @ mixing) * scales
