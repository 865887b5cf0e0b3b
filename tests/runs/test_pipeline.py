"""Whole runs on the tiny model: schedules, pattern verification, save/load parity, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pruneformer.errors import PruneformerError
from pruneformer.runs.pipeline import run


class Kill(Exception):
    pass


def final_masks(out):
    return load_file(str(next((out / "checkpoints").glob("phase*-admm.masks.safetensors"))))


def test_admm_run_is_reported_and_pattern_exact(tiny_recipe):
    recipe = tiny_recipe()
    report = run(recipe, progress=False, log=lambda _: None)
    out = recipe.output_dir
    assert report["all_layers_satisfy_pattern"] is True
    assert report["overall_sparsity"] == pytest.approx(0.5)
    assert [p["name"] for p in report["phases"]] == ["dense", "phase0-admm", "phase1-masked"]
    history = report["phases"][1]["method_history"]
    assert len(history) == 1 + 24 // 4  # initial record + one per Z/U update
    assert history[-1]["primal_residual"] < 0.9 * history[1]["primal_residual"]
    assert report["dense"]["dev"]["accuracy"] > 0.7  # the tiny task is learnable
    for name in ("report.json", "report.md", "training_curves.png", "model/model.safetensors", "model/pruning.json"):
        assert Path(out, name).is_file(), name
    saved = json.loads(Path(out, "model", "pruning.json").read_text())
    assert saved["pattern"] == "2:4" and len(saved["targets"]) == 12


def test_saved_model_gives_identical_predictions(tiny_recipe, tiny_task):
    from transformers import AutoModelForSequenceClassification

    from pruneformer.models.saved import load_pruned_model

    recipe = tiny_recipe(prune={"method": "magnitude-retrain", "epochs": 0.5})
    run(recipe, progress=False, log=lambda _: None)
    model_dir = Path(recipe.output_dir, "model")
    ours, tokenizer, info = load_pruned_model(model_dir)
    plain = AutoModelForSequenceClassification.from_pretrained(model_dir)  # plain transformers, no pruneformer
    batch = tokenizer(["the film was good", "a boring plot and awful acting"], padding=True, return_tensors="pt")
    ours.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(ours(**batch).logits, plain(**batch).logits)
    assert info["method"] == "magnitude-retrain"
    report = json.loads(Path(recipe.output_dir, "report.json").read_text())
    from transformers import DataCollatorWithPadding

    from pruneformer.data import load_data, tokenize_bundle
    from pruneformer.train.evaluation import evaluate

    bundle = tokenize_bundle(load_data(str(tiny_task["train"]), dev=str(tiny_task["dev"])), tokenizer, 16)
    again = evaluate(ours, bundle.dev, DataCollatorWithPadding(tokenizer), ["accuracy"])
    assert again["accuracy"] == report["pruned"]["dev"]["accuracy"]


@pytest.mark.parametrize("method,phases", [
    ("magnitude", ["dense", "phase0-magnitude"]),
    ("srste", ["dense", "phase0-srste"]),
    ("admm-srste", ["dense", "phase0-admm", "phase1-srste"]),
])
def test_every_schedule_ends_in_the_pattern(tiny_recipe, method, phases):
    """Read off the saved weights, not the report's flag: 1:4 keeps one weight in every 4 consecutive inputs,
    4x4:8 eight in every 4 x 4 tile; and the pruned model still solves the (easy) tiny task."""
    from pruneformer.core.targets import resolve_targets
    from pruneformer.models.saved import load_pruned_model

    pattern = "4x4:8" if method == "srste" else "1:4"
    recipe = tiny_recipe(prune={"method": method, "pattern": pattern})
    report = run(recipe, progress=False, log=lambda _: None)
    assert [p["name"] for p in report["phases"]] == phases
    targets = resolve_targets(load_pruned_model(recipe.output_dir + "/model")[0])
    assert len(targets) == 12
    for target in targets:
        w = target.linear_weight.detach()
        out, inp = w.shape
        if pattern == "1:4":
            per_group, allowed, zeros = (w.reshape(out, inp // 4, 4) != 0).sum(-1), 1, 0.75
        else:
            per_group, allowed, zeros = (w.reshape(out // 4, 4, inp // 4, 4) != 0).sum((1, 3)), 8, 0.5
        assert int(per_group.max()) == allowed, target.name
        assert float((w == 0).float().mean()) == zeros, target.name
    assert report["all_layers_satisfy_pattern"] is True and report["overall_sparsity"] == pytest.approx(zeros)
    assert report["dense"]["dev"]["accuracy"] >= 0.9 and report["pruned"]["dev"]["accuracy"] >= 0.8


@pytest.mark.parametrize("admm", [{}, {"pull": "lr", "score": "fisher", "rho": 50.0}], ids=["fixed", "lr-fisher"])
def test_killed_admm_run_resumes_to_the_same_masks(admm, tiny_recipe, tmp_path):
    reference = tiny_recipe(output_dir=str(tmp_path / "ref"), admm=admm)
    run(reference, progress=False, log=lambda _: None)
    ref_masks = final_masks(tmp_path / "ref")
    ref_weights = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))

    interrupted = tiny_recipe(output_dir=str(tmp_path / "killed"), admm=admm)
    calls = []

    def die_in_admm(step: int, loss: float) -> None:
        calls.append(step)
        if len(calls) == 7:  # step 7 of ADMM (checkpoint at step 4), from the session's dense model
            raise Kill()

    with pytest.raises(Kill):
        run(interrupted, progress=False, log=lambda _: None, callbacks=[die_in_admm])
    assert (tmp_path / "killed" / "checkpoints" / "phase0-admm" / "state.json").is_file()
    with pytest.raises(PruneformerError, match="--resume"):
        run(interrupted, progress=False, log=lambda _: None)
    report = run(interrupted, resume=True, progress=False, log=lambda _: None)
    assert report["phases"][1]["resumed_from_step"] == 4
    got = final_masks(tmp_path / "killed")
    assert got.keys() == ref_masks.keys()
    assert all(torch.equal(got[k], ref_masks[k]) for k in ref_masks)
    weights = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
