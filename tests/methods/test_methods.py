"""The lifecycle methods on small Linear stacks: each hook does exactly what the method's maths says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneformer.core.patterns import parse_pattern
from pruneformer.core.targets import Target
from pruneformer.methods import ADMMPruner, MagnitudePruner, MaskedFineTuner, SRSTEPruner


def make_stack(seed: int = 0, width: int = 16) -> tuple[nn.Sequential, list[Target]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 8))
    targets = [Target("0", model[0], "ffn_in", 0), Target("2", model[2], "ffn_out", 0)]
    return model, targets


def regression_batch(seed: int = 1, width: int = 16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, width, generator=g)
    return x, torch.randn(64, 8, generator=g)


def train(model, method, steps: int, lr: float = 1e-2, weight_decay: float = 0.1):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = regression_batch()
    for step in range(steps):
        method.before_forward(step)
        loss = nn.functional.mse_loss(model(x), y)
        extra = method.loss_term(step)
        (loss if extra is None else loss + extra).backward()
        method.after_backward(step)
        method.before_optimizer_step(step)
        opt.step()
        opt.zero_grad()
        method.after_optimizer_step(step)
    return opt


def test_magnitude_one_shot_equals_projection():
    model, targets = make_stack()
    expected = [parse_pattern("2:4").project(t.module.weight.detach()) for t in targets]
    MagnitudePruner("2:4").attach(model, targets)
    for target, want in zip(targets, expected):
        assert torch.equal(target.module.weight.detach(), want)


def test_masked_finetune_keeps_pruned_weights_exactly_zero_under_adamw_decay():
    model, targets = make_stack()
    method = MaskedFineTuner("2:4")
    method.attach(model, targets)
    masks = {k: v.clone() for k, v in method.masks.items()}
    before = [t.module.weight.detach().clone() for t in targets]
    train(model, method, steps=20)
    for target, w0 in zip(targets, before):
        w = target.module.weight.detach()
        mask = masks[target.name]
        assert torch.all(w[~mask] == 0)
        assert not torch.equal(w[mask], w0[mask])  # kept weights did train
        assert parse_pattern("2:4").satisfied(w)
    assert all(torch.equal(method.finalize()[k], masks[k]) for k in masks)


def test_admm_gradient_is_the_squared_frobenius_penalty():
    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=0.3, interval=1000, penalty="gradient")
    method.attach(model, targets)
    with torch.no_grad():  # make U non-zero so every term of W - Z + U matters
        method.U = [torch.randn_like(u) for u in method.U]
    x, y = regression_batch()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    method.after_backward(0)
    method.before_optimizer_step(0)
    ours = [t.module.weight.grad.clone() for t in targets]
    model.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    for t, z, u in zip(targets, method.Z, method.U):
        loss = loss + 0.3 / 2 * (t.module.weight - z + u).pow(2).sum()
    loss.backward()
    for got, t in zip(ours, targets):
        torch.testing.assert_close(got, t.module.weight.grad, rtol=1e-5, atol=1e-6)


def test_admm_z_stays_in_pattern_residual_falls_and_u_is_the_running_gap():
    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=1e-2, rho_schedule="geometric", rho_factor=1.5, rho_max=5.0, interval=10)
    method.attach(model, targets)
    train(model, method, steps=200, lr=5e-3, weight_decay=0.0)
    residuals = [h["primal_residual"] for h in method.history[1:]]
    assert len(residuals) == 20
    assert residuals[-1] < 0.2 * residuals[0]
    assert all(parse_pattern("2:4").satisfied(z) for z in method.Z)
    assert method.rho == pytest.approx(min(1e-2 * 1.5**20, 5.0))
    masks = method.finalize()
    for target in targets:
        assert parse_pattern("2:4").satisfied(target.module.weight.detach())
        assert torch.equal(target.module.weight.detach() != 0, masks[target.name] & (target.module.weight.detach() != 0))


def test_admm_constant_rho_and_state_roundtrip():
    model, targets = make_stack()
    method = ADMMPruner("4x4:8", rho=2e-3, rho_schedule="constant", interval=5)
    method.attach(model, targets)
    train(model, method, steps=15)
    assert method.rho == 2e-3
    state = method.state_dict()
    other_model, other_targets = make_stack()
    other_model.load_state_dict(model.state_dict())
    other = ADMMPruner("4x4:8", rho=0.25, rho_schedule="constant", interval=5)
    other.attach(other_model, other_targets)
    other.load_state_dict(state)
    assert other.steps == 15 and other.rho == 2e-3 and other.history == method.history
    for a, b in zip(method.Z + method.U, other.Z + other.U):
        assert torch.equal(a, b)


def test_admm_eval_weights_are_projected_then_restored():
    model, targets = make_stack()
    method = ADMMPruner("2:4")
    method.attach(model, targets)
    dense = [t.module.weight.detach().clone() for t in targets]
    with method.eval_weights():
        for t, w in zip(targets, dense):
            assert torch.equal(t.module.weight.detach(), parse_pattern("2:4").project(w))
    for t, w in zip(targets, dense):
        assert torch.equal(t.module.weight.detach(), w)


def test_admm_stops_with_a_message_when_the_residual_explodes():
    from pruneformer.errors import DivergenceError

    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=1e-3, interval=1)
    method.attach(model, targets)
    method.update_auxiliaries()
    with torch.no_grad():
        targets[0].module.weight.mul_(float("nan"))
    with pytest.raises(DivergenceError, match="Fix:"):
        method.update_auxiliaries()


def test_srste_forward_is_sparse_backward_is_dense_plus_decay():
    model, targets = make_stack()
    lam = 0.05
    method = SRSTEPruner("2:4", lambda_w=lam, decay="gradient")
    method.attach(model, targets)
    dense = [t.module.weight.detach().clone() for t in targets]
    pattern = parse_pattern("2:4")
    x, y = regression_batch()
    # reference: the loss of the masked network, differentiated w.r.t. the sparse weights
    ref = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref[0].weight.copy_(pattern.project(dense[0]))
        ref[2].weight.copy_(pattern.project(dense[1]))
    ref_loss = nn.functional.mse_loss(ref(x), y)
    ref_loss.backward()

    method.before_forward(0)
    loss = nn.functional.mse_loss(model(x), y)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    loss.backward()
    method.after_backward(0)
    for t, w, r in zip(targets, dense, (ref[0], ref[2])):
        assert torch.equal(t.module.weight.detach(), w)  # dense weights restored
        mask = pattern.mask(w).float()
        torch.testing.assert_close(t.module.weight.grad, r.weight.grad + lam * (1 - mask) * w)


def test_srste_training_ends_in_pattern():
    model, targets = make_stack()
    method = SRSTEPruner("1:4")
    method.attach(model, targets)
    train(model, method, steps=10)
    method.finalize()
    assert all(parse_pattern("1:4").satisfied(t.module.weight.detach()) for t in targets)


def test_pattern_must_fit_every_target():
    from pruneformer.errors import PatternError

    model, targets = make_stack(width=18)
    with pytest.raises(PatternError, match="Fix:"):
        ADMMPruner("2:4").attach(model, targets)


def test_admm_decoupled_penalty_is_the_exact_proximal_step():
    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=0.25, penalty="decoupled", interval=1000)
    method.attach(model, targets)
    with torch.no_grad():
        method.U = [torch.randn_like(u) for u in method.U]
    before = [t.module.weight.detach().clone() for t in targets]
    method.after_optimizer_step(0)
    for t, w, z, u in zip(targets, before, method.Z, method.U):
        # argmin_x rho/2 ||x - z + u||^2 + 1/2 ||x - w||^2
        torch.testing.assert_close(t.module.weight.detach(), (w + 0.25 * (z - u)) / 1.25)


def test_admm_rescales_the_scaled_dual_when_rho_grows():
    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=0.1, rho_schedule="geometric", rho_factor=2.0, rho_max=1.0, interval=1000)
    method.attach(model, targets)
    method.update_auxiliaries()  # U = W - Z, then rho 0.1 -> 0.2 and U halves
    for t, z, u in zip(targets, method.Z, method.U):
        torch.testing.assert_close(u * 0.2, (t.module.weight.detach() - z) * 0.1)


def test_admm_warns_when_the_residual_does_not_fall():
    model, targets = make_stack()
    stuck = ADMMPruner("2:4", rho=1e-6, rho_schedule="constant", interval=2)
    stuck.attach(model, targets)
    train(model, stuck, steps=10, lr=1e-2)
    assert "did not converge" in stuck.convergence_warning()
    model, targets = make_stack()
    good = ADMMPruner("2:4", rho=1e-2, rho_factor=1.5, rho_max=5.0, interval=10)
    good.attach(model, targets)
    train(model, good, steps=200, lr=5e-3, weight_decay=0.0)
    assert good.convergence_warning() is None


def test_srste_decoupled_decay_shrinks_exactly_the_pruned_weights():
    model, targets = make_stack()
    method = SRSTEPruner("2:4", decay="decoupled", decay_rate=0.25)
    method.attach(model, targets)
    dense = [t.module.weight.detach().clone() for t in targets]
    masks = [parse_pattern("2:4").mask(w) for w in dense]
    method.before_forward(0)
    nn.functional.mse_loss(model(regression_batch()[0]), regression_batch()[1]).backward()
    method.after_backward(0)
    grads = [t.module.weight.grad.clone() for t in targets]
    method.after_optimizer_step(0)  # no optimizer step here: only the decay acts
    for t, w, m, g in zip(targets, dense, masks, grads):
        got = t.module.weight.detach()
        assert torch.equal(got[m], w[m])  # kept weights untouched
        torch.testing.assert_close(got[~m], w[~m] / 1.25)
        assert torch.isfinite(g).all()


def test_srste_decoupled_decay_is_independent_of_adam_normalisation():
    """Under Adam, the paper's gradient term (2e-4) barely moves pruned weights; the decoupled decay does."""
    shrink = {}
    for decay in ("gradient", "decoupled"):
        model, targets = make_stack()
        before = [parse_pattern("1:4").mask(t.module.weight.detach()) for t in targets]
        method = SRSTEPruner("1:4", decay=decay, decay_rate=0.05)
        method.attach(model, targets)
        start = sum(float(t.module.weight.detach()[~m].abs().sum()) for t, m in zip(targets, before))
        train(model, method, steps=30, lr=1e-4, weight_decay=0.0)
        end = sum(float(t.module.weight.detach()[~m].abs().sum()) for t, m in zip(targets, before))
        shrink[decay] = end / start
    assert shrink["gradient"] > 0.95
    assert shrink["decoupled"] < 0.4


def test_admm_penalty_is_added_after_clipping():
    """The penalty gradient goes in after clipping: a tiny clip norm scales the task gradient only."""
    from pruneformer.train.loop import StepContext, train_step

    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=0.3, interval=1000, penalty="gradient")
    method.attach(model, targets)
    seen = {}

    class SpySGD(torch.optim.SGD):
        def step(self, closure=None):
            seen["grads"] = [t.module.weight.grad.clone() for t in targets]
            return super().step(closure)

    optimizer = SpySGD(model.parameters(), lr=0.0)

    class Out:
        def __init__(self, loss):
            self.loss = loss

    x, y = regression_batch()
    wrapper = nn.Module()
    wrapper.net = model
    wrapper.forward = lambda **batch: Out(nn.functional.mse_loss(model(batch["x"]), batch["y"]))
    ctx = StepContext(wrapper, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                      method=method, max_grad_norm=1e-6)
    train_step(ctx, {"x": x, "y": y}, 0)
    for got, t, z, u in zip(seen["grads"], targets, method.Z, method.U):
        penalty = 0.3 * (t.module.weight.detach() - z + u)
        assert (got - penalty).norm() < 1e-5  # the clipped task gradient is ~0; the penalty is intact
        assert penalty.norm() > 1e-2


def test_admm_diagnostics_per_update():
    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=0.05, rho_factor=1.5, rho_max=1.0, interval=5, eval_every=2)
    method.attach(model, targets)
    first = method.history[0]
    assert first["magnitude_agreement"] == 1.0 and first["mask_changed"] == 0.0
    requested = []
    for step in range(20):
        method.before_forward(step)
        nn.functional.mse_loss(model(regression_batch()[0]), regression_batch()[1]).backward()
        with torch.no_grad():
            for t in targets:
                t.module.weight.sub_(0.05 * t.module.weight.grad.sign())  # big moves: masks must change
                t.module.weight.grad = None
        method.after_optimizer_step(step)
        if method.eval_requested():
            requested.append(step)
            method.record_eval({"accuracy": 0.5})
    assert requested == [9, 19]  # updates 2 and 4 (steps 10 and 20)
    records = method.history[1:]
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    assert all(0.0 <= r["mask_changed"] <= 1.0 and 0.0 <= r["magnitude_agreement"] <= 1.0 for r in records)
    assert any(r["mask_changed"] > 0 for r in records) and records[-1]["magnitude_agreement"] < 1.0
    assert "proj_dev_accuracy" in records[1] and "proj_dev_accuracy" not in records[0]
    for r in records:
        assert r["dual_residual"] == pytest.approx(r["z_change"] * r["rho"])  # rho in force at that update


def test_admm_residual_balancing_moves_rho_towards_the_larger_residual():
    model, targets = make_stack()
    method = ADMMPruner("2:4", rho=0.1, rho_schedule="balanced", rho_factor=2.0, rho_max=10.0, interval=1000)
    method.attach(model, targets)
    method.update_auxiliaries()  # first update: Z barely moved, primal >> dual -> rho doubles
    assert method.rho == pytest.approx(0.2)
    with torch.no_grad():  # W inside the pattern and U = 0: the next Z is W (primal 0) ...
        for t, z in zip(targets, method.Z):
            t.module.weight.copy_(z)
    method.U = [torch.zeros_like(u) for u in method.U]
    method.Z = [torch.zeros_like(z) for z in method.Z]  # ... far from the previous Z: dual >> primal
    method.update_auxiliaries()
    assert method.rho == pytest.approx(0.1)


def test_admm_default_reaches_the_target_residual_by_itself():
    model, targets = make_stack()
    method = ADMMPruner("2:4", interval=10)  # the defaults: decoupled, geometric continuation
    method.attach(model, targets)
    train(model, method, steps=300, lr=1e-3, weight_decay=0.0)
    assert method.history[-1]["primal_residual"] < 0.05
    assert method.converged() and method.convergence_warning() is None
