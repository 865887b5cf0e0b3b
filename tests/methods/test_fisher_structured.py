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
    fisher = FisherStructuredPruner(target=0.5, align=1)
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
