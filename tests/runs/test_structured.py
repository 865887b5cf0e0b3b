"""The structured pipeline end to end on the tiny model: MLPruning (two steps), the L1 baseline, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model_dir
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.errors import PatternError, RecipeError
from pruneformer.models.saved import load_pruned_model
from pruneformer.runs.pipeline import run


def structured(tiny_recipe, method: str, **mlpruning):
    return tiny_recipe(prune={"method": method, "epochs": 2.0, "lr": 1e-3},
                       mlpruning={"threshold_init": 3.0, "score_lr": 0.2, "block_size": 16, **mlpruning},
                       dense={"epochs": 1.0, "lr": 1e-3})


@pytest.mark.parametrize("method,extra", [("mlpruning", {"finetune_epochs": 0.5}), ("mlpruning", {"block_keep": 0.5}),
                                          ("l1-structured", {})])
def test_structured_run_shrinks_to_the_target_and_reloads(tiny_recipe, method, extra):
    recipe = structured(tiny_recipe, method, target=0.25, **extra)
    report = run(recipe, progress=False, log=lambda _: None)
    s = report["structured"]
    assert s["remaining_fraction"] <= 0.25 + 1e-9 and s["remaining_fraction"] > 0.15
    assert s["nonzero_encoder_weights"] / s["dense_encoder_weights"] == pytest.approx(s["remaining_fraction"])
    assert [p["name"].split("-")[0] for p in report["phases"]] == ["dense", "phase0"] + ["phase1"] * (method != "mlpruning" or len(extra) > 0)
    if "block_keep" in extra:  # blocks zeroed inside a shrunk model: fewer non-zeros than stored weights
        assert s["shrunk_encoder_weights"] > s["nonzero_encoder_weights"]
        assert any(r["sparsity"] > 0.3 for r in report["layers"])
    else:
        assert s["shrunk_encoder_weights"] == s["nonzero_encoder_weights"]
    assert len(s["kept_per_layer"]) == 2 and all(0 <= k["heads"] <= 4 for k in s["kept_per_layer"])
    markdown = (recipe_out := report["model_dir"].rsplit("/", 1)[0]) and open(f"{recipe_out}/report.md").read()
    assert "Per-layer kept heads and neurons" in markdown
    model, tokenizer, info = load_pruned_model(report["model_dir"])
    assert type(model).__name__ == "ShrunkBertForSequenceClassification" and info["method"] == method
    config = json.load(open(f"{report['model_dir']}/config.json"))
    assert config["layer_num_heads"] == [k["heads"] for k in s["kept_per_layer"]]
    batch = tokenizer(["the movie was good", "a dull boring plot"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model.eval()(**batch).logits
    assert torch.isfinite(logits).all()


def test_bad_structured_input_is_one_line(tiny_recipe, tmp_path):
    for bad in ({"target": 0.0}, {"target": 1.5}):
        with pytest.raises(RecipeError) as err:
            structured(tiny_recipe, "mlpruning", **bad)
        assert "mlpruning.target" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RecipeError, match="exceeds mlpruning.block_keep"):
        structured(tiny_recipe, "mlpruning", target=0.6, block_keep=0.5)
    with pytest.raises(PatternError) as err:
        run(structured(tiny_recipe, "mlpruning", block_keep=0.5, target=0.3, block_size=24), progress=False,
            log=lambda _: None)
    assert "Block size 24 does not divide" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["mlpruning", "l1-structured"])
def test_structured_run_on_another_family_shrinks_and_reloads(tiny_recipe, tmp_path, method):
    """DistilBERT goes through the same pipeline (its family's module-swap cut) and reloads with plain
    transformers' remote code."""
    from transformers import AutoModelForSequenceClassification

    distil = make_tiny_model_dir(tmp_path / "distil", model_type="distilbert")
    recipe = structured(tiny_recipe, method, target=0.5).model_copy(
        update={"model": str(distil), "output_dir": str(tmp_path / method)})
    report = run(recipe, progress=False, log=lambda _: None)
    s = report["structured"]
    assert 0.35 < s["remaining_fraction"] <= 0.5 + 1e-9
    assert s["shrunk_encoder_weights"] == s["nonzero_encoder_weights"]
    model, tokenizer, _ = load_pruned_model(report["model_dir"])
    assert type(model).__name__ == "ShrunkModel" and model.config.base_model_type == "distilbert"
    remote = AutoModelForSequenceClassification.from_pretrained(report["model_dir"], trust_remote_code=True).eval()
    batch = tokenizer(["the movie was good", "a dull boring plot"], return_tensors="pt", padding=True)
    batch.pop("token_type_ids", None)
    with torch.no_grad():
        assert (remote(**batch).logits - model.eval()(**batch).logits).abs().max() <= 1e-5


def test_cli_target_flag_errors(tiny_model_dir, tiny_task, tmp_path):
    result = CliRunner().invoke(app, ["prune", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]),
                                      "--method", "mlpruning", "--target", "1.2", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "mlpruning.target" in result.output and "less than or equal to 1" in result.output
