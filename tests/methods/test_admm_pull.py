"""The fine-tuning ADMM whose pull follows the learning rate, whose Z is curvature-aware, and whose dual does
not oscillate (issue "ADMM that wins where the evidence says it can", part 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layer_fixtures import one_linear, run_phase

from pruneformer.core.patterns import parse_pattern
from pruneformer.errors import PruneformerError, RecipeError
from pruneformer.methods import ADMMPruner
from pruneformer.runs.recipe import build_recipe


def at_optimum(seed: int, inputs: int = 64, outputs: int = 16, pool: int = 1024):
    """A Linear at its task's optimum (targets: its own outputs plus noise) whose inputs' feature norms differ,
    so the mask that keeps the task loss lowest is not magnitude's."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(pool, inputs, generator=g) * torch.exp(0.7 * torch.randn(inputs, generator=g))
    w0 = 0.04 * torch.randn(outputs, inputs, generator=g)
    return x, x @ w0.T + 0.5 * torch.randn(pool, outputs, generator=g), w0


def test_lr_pull_is_the_proximal_step_at_the_steps_learning_rate():
    w0 = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    layer, targets = one_linear(w0)
    method = ADMMPruner("2:4", rho=200.0, pull="lr", interval=1000)
    method.attach(layer, targets)
    goal = method.Z[0] - method.U[0]
    for step, lr in enumerate([1e-4, 5e-4, 2e-3]):
        before = layer.weight.detach().clone()
        method.set_learning_rate(lr)
        method.after_optimizer_step(step)
        expected = (before + lr * 200.0 * goal) / (1 + lr * 200.0)
        torch.testing.assert_close(layer.weight.detach(), expected, rtol=1e-6, atol=1e-7)
    kept = (1 - 0.02 / 1.02) * (1 - 0.1 / 1.1) * (1 - 0.4 / 1.4)
    assert method.interval_keep == pytest.approx(kept)


def test_dual_moves_as_far_as_the_pull_closed_the_gap():
    w0 = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    layer, targets = one_linear(w0)
    method = ADMMPruner("2:4", rho=100.0, pull="lr", interval=3, rho_schedule="constant")
    method.attach(layer, targets)
    for step in range(3):
        method.set_learning_rate(1e-3)
        method.after_optimizer_step(step)  # the third step runs the Z/U update
    closed = 1 - (1 - 0.1 / 1.1) ** 3
    w = layer.weight.detach()
    torch.testing.assert_close(method.U[0], closed * (w - method.Z[0]))
    assert method.history[-1]["dual_step"] == pytest.approx(closed)
    # the fixed pull keeps the papers' full dual step
    fixed = ADMMPruner("2:4", rho=0.1, interval=1, rho_schedule="constant")
    layer, targets = one_linear(w0)
    fixed.attach(layer, targets)
    fixed.after_optimizer_step(0)
    torch.testing.assert_close(fixed.U[0], layer.weight.detach() - fixed.Z[0])


def test_lr_pull_without_a_learning_rate_says_how_to_give_it():
    layer, targets = one_linear(torch.randn(4, 8))
    method = ADMMPruner("2:4", pull="lr")
    method.attach(layer, targets)
    with pytest.raises(PruneformerError, match="set_learning_rate"):
        method.after_optimizer_step(0)
    with pytest.raises(ValueError, match="decoupled"):
        ADMMPruner("2:4", pull="lr", penalty="gradient")
    with pytest.raises(ValueError, match=r"rho \(1\) is above rho_max \(0.3\)"):  # rho was capped silently before
        ADMMPruner("2:4", rho=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_z_finds_a_mask_that_magnitude_cannot_and_the_dual_does_not_oscillate(seed):
    x, y, w0 = at_optimum(seed)
    pattern = parse_pattern("2:4")
    magnitude = pattern.mask(w0)
    dense = float(nn.functional.mse_loss(x @ w0.T, y))
    loss = lambda w: float(nn.functional.mse_loss(x @ w.T, y)) - dense  # noqa: E731  (the loss pruning adds)
    base = loss(w0 * magnitude)

    today, w_today = run_phase(ADMMPruner("2:4", rho=0.02, rho_max=0.3, rho_factor=1.8, interval=30), x, y, w0, 5e-5)
    gentle = ADMMPruner("2:4", rho=5e-4, rho_max=0.3, rho_factor=3.5, interval=30)
    run_phase(gentle, x, y, w0, 5e-5)
    new = ADMMPruner("2:4", pull="lr", score="fisher", rho=30.0, rho_max=3000.0, rho_factor=2.5, interval=30)
    mask, w_new = run_phase(new, x, y, w0, 5e-5)

    same_today, groups = pattern.groups_equal(today, magnitude)
    assert same_today / groups > 0.99  # today's ADMM ends on one-shot magnitude's mask (the finding)
    assert pattern.groups_equal(mask, magnitude)[0] / groups < 0.8  # the new one moves it ...
    assert loss(w_new) < 0.8 * base and loss(w_new) < 0.8 * loss(w_today)  # ... to a better one
    assert max(h["flipped_back"] for h in gentle.history) > 0.1  # a gentle start oscillates today ...
    assert max(h["flipped_back"] for h in new.history) < 0.03  # ... the damped dual does not
    assert new.history[-1]["primal_residual"] < 0.05 and new.converged()
    assert pattern.satisfied(w_new) and new.history[-1]["final_magnitude_agreement"] == pytest.approx(
        pattern.groups_equal(mask, magnitude)[0] / groups)


def test_state_round_trip_carries_the_fisher_and_the_dual_step():
    x, y, w0 = at_optimum(3)
    method = ADMMPruner("2:4", pull="lr", score="fisher", rho=30.0, rho_max=3000.0, interval=7)
    run_phase(method, x, y, w0, 1e-3, steps=40)
    state = method.state_dict()
    layer, targets = one_linear(w0)
    other = ADMMPruner("2:4", pull="lr", score="fisher", rho=1.0, interval=7)
    other.attach(layer, targets)
    other.load_state_dict(state)
    assert other.fisher_steps == 40 and other.lr == method.lr and other.interval_keep == method.interval_keep
    assert all(torch.equal(a, b) for a, b in zip(other.fisher, method.fisher))
    assert all(torch.equal(a, b) for a, b in zip(other.older_masks, method.older_masks))


def test_recipe_defaults_follow_the_pull_and_refuse_a_gradient_penalty():
    fixed = ADMMPruner.from_config(build_recipe({"prune": {"method": "admm"}}), steps=270)
    assert (fixed.pull, fixed.rho, fixed.rho_max) == ("fixed", 0.02, 0.3)
    lr = ADMMPruner.from_config(build_recipe({"prune": {"method": "admm"}, "admm": {"pull": "lr", "score": "fisher"}}),
                                steps=270)
    assert (lr.pull, lr.score, lr.rho, lr.rho_max) == ("lr", "fisher", 30.0, 3000.0)
    assert lr.rho_factor == pytest.approx(100 ** (1 / 5))  # rho_max at 60% of the 9 updates
    with pytest.raises(RecipeError, match="admm.*decoupled"):
        build_recipe({"admm": {"pull": "lr", "penalty": "gradient"}})
    with pytest.raises(RecipeError, match="rho_max.*defaults fixed 0.02 / 0.3, lr 30 / 3000"):
        build_recipe({"admm": {"pull": "lr", "rho_max": 0.3}})  # a fixed-pull cap on an lr-pull rho
