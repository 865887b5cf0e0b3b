"""One Linear pruned by a calibrated method, and the inputs that make reconstruction matter: shared by the
tests of SparseGPT, Wanda and ALPS."""

from __future__ import annotations

import torch
from torch import nn

from pruneformer.core.targets import Target
from pruneformer.train.loop import lr_factor


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


def one_linear(weight: torch.Tensor) -> tuple[nn.Linear, list[Target]]:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer, [Target("w", layer, "ffn_in", 0)]


def run_phase(method, x, y, w0, lr: float, steps: int = 270, order_seed: int = 0):
    """One ADMM phase of a single Linear (weight ``w0``, named ``w``) as the standard preset runs it: AdamW,
    batch 32, the first half of a warmup + linear decay schedule, the method told each step's lr. Returns the
    hard prune's mask and the pruned weight."""
    layer, targets = one_linear(w0)
    method.attach(layer, targets)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.01)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(order_seed))
    for step in range(steps):
        rows = order[(step * 32) % x.shape[0]:][:32]
        optimizer.param_groups[0]["lr"] = lr * lr_factor(step, 2 * steps, int(0.12 * steps))
        nn.functional.mse_loss(layer(x[rows]), y[rows]).backward()
        method.before_optimizer_step(step)
        method.set_learning_rate(optimizer.param_groups[0]["lr"])
        optimizer.step()
        optimizer.zero_grad()
        method.after_optimizer_step(step)
    return method.finalize()["w"], layer.weight.detach()
