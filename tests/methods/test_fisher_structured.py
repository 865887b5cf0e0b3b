"""The retraining-free structured method (Fisher choice + least-squares rescaling, Kwon et al. 2022)."""

from __future__ import annotations

import copy

import pytest
import torch
from family_fixtures import family_batch, tiny_family_model

from pruneformer.compress import shrink_model
from pruneformer.core.targets import resolve_targets
from pruneformer.methods.fisher_structured import FisherStructuredPruner
from pruneformer.methods.l1_structured import L1StructuredPruner


def batches(name: str) -> list[dict[str, torch.Tensor]]:
    out = []
    for seed in range(4):
        b = family_batch(name, seed=seed)
        b["labels"] = torch.tensor([seed % 3, (seed + 1) % 3])
        out.append(b)
    return out


def inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("name", ["bert", "dinov2", "llama"])
def test_rescaling_lowers_every_layers_error(name):
    """The same Fisher choice with and without the least-squares scales: the scales lower every layer's output
    error on the calibration inputs (what the solve promises; the final logits also depend on how errors
    travel through later layers, measured at full scale instead), and the Fisher scores are finite and
    non-negative."""
    dense = tiny_family_model(name)
    data = batches(name)

    scaled_model = copy.deepcopy(dense)
    fisher = FisherStructuredPruner(target=0.5, align=1, allocation="share")  # L1's choice, on Fisher scores
    fisher.attach(scaled_model, resolve_targets(scaled_model))
    fisher.calibrate(scaled_model, data)
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in fisher.importance.values())
    plain_model = copy.deepcopy(dense)
    plain = L1StructuredPruner(target=0.5, align=1)  # the same choice, no scales
    plain.attach(plain_model, resolve_targets(plain_model))
    plain.importance = {k: v.clone() for k, v in fisher.importance.items()}
    fisher.finalize()
    plain.finalize()
    assert fisher.final_masks.keys() == plain.final_masks.keys()
    assert all(torch.equal(fisher.final_masks[k], plain.final_masks[k]) for k in fisher.final_masks)
    assert fisher.scales and not all(torch.allclose(s, torch.ones_like(s)) for s in fisher.scales.values())

    # the solve's own promise: every layer's output error on the calibration inputs is no larger scaled
    assert all(o["scaled"] <= o["unscaled"] + 1e-9 for o in fisher.objective.values())
    assert any(o["scaled"] < o["unscaled"] - 1e-9 for o in fisher.objective.values())
    with torch.no_grad():  # and the scaled cut is an exact shrink of the scaled, masked model
        shrunk = shrink_model(scaled_model, fisher.layer_plans(2)).eval()
        assert all((shrunk(**inputs(b)).logits - scaled_model(**inputs(b)).logits).abs().max() <= 1e-5 for b in data)


def test_fisher_structured_runs_retraining_free_end_to_end(tiny_recipe):
    from pruneformer.runs.pipeline import run

    recipe = tiny_recipe(prune={"method": "fisher-structured", "epochs": 0.0},
                         mlpruning={"target": 0.5}, calibration={"samples": 32, "batch_size": 8})
    report = run(recipe, progress=False, log=lambda _: None)
    assert report["structured"]["remaining_fraction"] <= 0.5 + 1e-9
    assert [p["name"] for p in report["phases"]] == ["dense", "phase0-fisher-structured-one-shot"]


def measured_errors(student, teacher, targets, data, pooled: dict[str, bool]) -> dict[str, float]:
    """Each output Linear's squared error against the dense model, measured by running both models: the Linear's
    output plus the residual it is added to (where the family names it), over the real tokens (only token 0
    where ``pooled`` says so)."""
    from pruneformer.core.targets import layer_stack_path
    from pruneformer.families.base import family_of
    from pruneformer.methods.rescale import capture, real_rows, residual_path

    spots, stack = family_of(student).residual_inputs, layer_stack_path(student)
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    errors = {}
    for t in (t for t in targets if t.role in ("attn_out", "ffn_out")):
        spot = spots.get(t.role)
        path = residual_path(stack, t.layer, spot)
        total = 0.0
        for b in data:
            x = inputs(b)
            dense = capture(teacher.eval(), t_mods[t.name], t_mods.get(path), x, True, spot)
            cut = capture(student.eval(), s_mods[t.name], s_mods.get(path), x, True, spot)
            diff = cut["y"] - dense["y"] + ((cut["r"] - dense["r"]) if spot else 0.0)
            rows = diff[:, 0] if pooled[t.name] else real_rows(diff, b.get("attention_mask"))
            total += float(rows.double().pow(2).sum())
        errors[t.name] = total
    return errors


@pytest.mark.parametrize("name", ["bert", "dinov2", "llama"])
def test_sequential_rescaling_fits_each_layer_on_the_cut_models_own_inputs(name):
    """Kwon et al.'s mask tuning: in forward order, each output Linear is fitted on the inputs of the model as cut
    and already rescaled below, against the dense model's output plus the residual's drift (BERT and Llama name
    their residual stream; DINOv2 is matched on the Linear's output). So the error each solve reports equals the
    error measured afterwards by running the final model beside the dense one, layer after layer; a solve on
    the dense model's inputs (``independent``) reports another error above the first layer, and the first
    layer, whose inputs the cut has not yet changed, gets the same scales either way."""
    dense = tiny_family_model(name)
    data = batches(name)
    runs = {}
    for mode in ("sequential", "independent"):
        model = copy.deepcopy(dense)
        method = FisherStructuredPruner(target=0.5, align=1, rescale=mode)
        method.attach(model, resolve_targets(model))
        method.calibrate(model, data)
        method.finalize()
        runs[mode] = (model, method)
    model, seq = runs["sequential"]
    pooled = {k: o["pooled_token"] for k, o in seq.objective.items()}
    # a BERT sequence classifier's last FFN-out is fitted on the token its pooler reads, the others on all
    assert sorted(pooled.values()) == [False] * 3 + [name == "bert"]
    measured = measured_errors(model, dense, resolve_targets(model), data, pooled)
    assert seq.objective.keys() == measured.keys() and len(measured) == 4
    for key, found in measured.items():
        assert seq.objective[key]["scaled"] == pytest.approx(found, rel=1e-4, abs=1e-6)
        assert seq.objective[key]["scaled"] <= seq.objective[key]["unscaled"] + 1e-9
        assert seq.objective[key]["residual"] is (name != "dinov2")
    first, *later = sorted(measured, key=lambda k: next(t.layer * 2 + (t.role == "ffn_out")
                                                          for t in seq.targets if t.name == k))
    ind = runs["independent"][1]
    assert torch.allclose(seq.scales[first], ind.scales[first], atol=1e-5)
    assert any(abs(seq.objective[k]["unscaled"] - ind.objective[k]["unscaled"]) > 1e-6 for k in later)
    assert seq._teacher is None  # the dense copy is dropped once the cut is rescaled

    # the run passes the dense copy it already holds: the same scales, and the copy left as it was
    held = copy.deepcopy(dense)
    model = copy.deepcopy(dense)
    method = FisherStructuredPruner(target=0.5, align=1)
    method.attach(model, resolve_targets(model))
    method.calibrate(model, data, teacher=held)
    method.finalize()
    assert all(torch.equal(method.scales[k], seq.scales[k]) for k in seq.scales)
    assert all(torch.equal(a, b) for a, b in zip(held.state_dict().values(), dense.state_dict().values()))


def test_rescale_off_keeps_the_fisher_choice_unscaled():
    dense = tiny_family_model("bert")
    model = copy.deepcopy(dense)
    method = FisherStructuredPruner(target=0.5, align=1, rescale="off")
    method.attach(model, resolve_targets(model))
    method.calibrate(model, batches("bert"))
    method.finalize()
    assert method.scales == {} and method.objective == {}
    for t in method.targets:  # every weight is the dense one or zero (removed)
        kept, before = t.linear_weight, dict(dense.named_modules())[t.name].weight
        assert torch.all((kept == before) | (kept == 0))
    with pytest.raises(Exception, match="Unknown rescaling"):
        FisherStructuredPruner(target=0.5, rescale="bogus")


def test_search_allocation_splits_the_weight_budget_for_the_most_importance():
    """``allocation: search`` (Kwon et al.'s mask search, by weights): the heads and units it keeps fit the same
    weight budget as the share choice, hold at least as much Fisher importance, and move the budget to where
    the importance is (heads made 1000x as important: more heads than the share keeps)."""
    model = tiny_family_model("bert")
    searched = FisherStructuredPruner(target=0.5, align=1)  # search is the default
    searched.attach(model, resolve_targets(model))
    searched.calibrate(model, batches("bert"))
    share = FisherStructuredPruner(target=0.5, align=1, allocation="share")
    share.attach(model, resolve_targets(model))
    share.importance = dict(searched.importance)

    def cost_and_value(method, budgets):
        cost = value = 0.0
        for kind, roles in (("heads", ("query", "key", "value", "attn_out")), ("ffn_units", ("ffn_in", "ffn_out"))):
            flat = torch.cat([v for k, v in method.importance.items() if k.endswith(kind)])
            per = sum(t.linear_weight.numel() for t in method.targets if t.role in roles) / flat.numel()
            cost += budgets[kind] * per
            value += float(flat.sort(descending=True).values[:budgets[kind]].sum())
        return cost, value

    total = 0.5 * sum(t.linear_weight.numel() for t in searched.targets)
    (cost_s, value_s), (cost_h, value_h) = cost_and_value(searched, searched.budgets()), \
        cost_and_value(share, share.budgets())
    assert cost_s <= total + 1e-6 and cost_h <= total + 1e-6
    assert value_s >= value_h - 1e-9
    searched.importance = {k: v * (1000.0 if k.endswith("heads") else 1.0) for k, v in searched.importance.items()}
    assert searched.budgets()["heads"] > share.budgets()["heads"]
    with pytest.raises(Exception, match="Unknown allocation"):
        FisherStructuredPruner(target=0.5, allocation="bogus")
