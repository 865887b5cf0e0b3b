"""Quantization-aware fine-tuning as the last stage of a structured run: the weights end on the export's int8
grid, the record says how, export warns when told otherwise, resume reuses it, wrong methods are refused."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.deploy.export import export_model
from pruneformer.deploy.fake_quant import quantize_weight
from pruneformer.deploy.hardware import int8_saturates
from pruneformer.errors import RecipeError
from pruneformer.models.saved import load_pruned_model
from pruneformer.runs.pipeline import run


def qat_recipe(tiny_recipe, method: str = "l1-structured", **qat):
    return tiny_recipe(prune={"method": method, "epochs": 1.0, "lr": 1e-3},
                       mlpruning={"target": 0.5, "threshold_init": 3.0, "score_lr": 0.2},
                       qat={"epochs": 1.0, "lr": 5e-4, **qat})


def test_qat_stage_leaves_the_int8_grid_and_says_so(tiny_recipe, tmp_path):
    lines: list[str] = []
    recipe = qat_recipe(tiny_recipe)
    report = run(recipe, progress=False, log=lines.append)
    assert [p["name"] for p in report["phases"]][1:] == ["phase0-l1-structured-one-shot", "phase1-retrain", "phase2-qat"]
    assert report["phases"][-1]["steps"] == 16  # 256 examples / 16 per batch, 1 epoch
    qat = report["structured"]["qat"]
    assert qat == {"epochs": 1.0, "per_channel": True, "keep_fp32": ["classifier"], "int8_linears": 13,
                   "fp32_linears": ["classifier"], "reduce_range": False}
    # int8 rounds small weights to zero: not pruning, so the kept fraction is counted before the QAT stage
    assert report["structured"]["nonzero_encoder_weights"] == report["structured"]["shrunk_encoder_weights"]
    model, _, info = load_pruned_model(report["model_dir"])
    assert info["qat"] == qat
    zeros = sum(int((m.weight == 0).sum()) for n, m in model.named_modules() if n.startswith("bert.encoder")
                and isinstance(m, torch.nn.Linear))
    assert zeros > 0  # ... which it did here
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.weight.numel() and name != "classifier":
            assert torch.equal(quantize_weight(module.weight.detach()), module.weight.detach()), name
    assert not torch.equal(quantize_weight(model.classifier.weight.detach()), model.classifier.weight.detach())
    assert any("phase2-qat: 16 steps" in line and "per channel" in line for line in lines)
    warned: list[str] = []
    export_model(report["model_dir"], tmp_path / "onnx", quantize="int8", per_channel=False, log=warned.append)
    assert any(line.startswith("warning: this model was fine-tuned for int8 per channel") for line in warned)
    reduced: list[str] = []
    export_model(report["model_dir"], tmp_path / "onnx3", quantize="int8", reduce_range=True, log=reduced.append)
    assert any(line.startswith("warning: this model was fine-tuned") and "without --reduce-range" in line
               for line in reduced)
    quiet: list[str] = []
    export_model(report["model_dir"], tmp_path / "onnx2", quantize="int8", log=quiet.append)
    assert not any("fine-tuned" in line for line in quiet)
    # the full range is clipped where this CPU's int8 saturates, and the export says so
    assert any(line.startswith("warning: this CPU") for line in quiet) is int8_saturates()
    assert not any(line.startswith("warning") for line in reduced if "fine-tuned" not in line)
    # resume: every stage is done, the QAT model is loaded rather than trained again
    again = run(recipe, resume=True, progress=False, log=lambda _: None)
    assert again["pruned"]["dev"] == report["pruned"]["dev"]
    assert json.loads((recipe_dir := tmp_path / "run" / "run_state.json").read_text())["done"]["phase2-qat"]
    assert recipe_dir.is_file()


def test_qat_is_refused_for_methods_that_do_not_shrink(tiny_recipe):
    with pytest.raises(RecipeError) as err:
        run(qat_recipe(tiny_recipe, method="magnitude"), progress=False, log=lambda _: None)
    message = str(err.value)
    assert "qat.epochs applies to methods that shrink the model" in message and "l1-structured" in message
    assert "'magnitude'" in message and "\n" not in message
    with pytest.raises(Exception) as err:
        run(qat_recipe(tiny_recipe, keep_fp32=["no_such_layer"]), progress=False, log=lambda _: None)
    assert "--keep-fp32 'no_such_layer' matches no Linear" in str(err.value)


def test_cli_qat_flag_reaches_the_recipe(tiny_model_dir, tiny_task, tmp_path):
    result = CliRunner().invoke(app, ["prune", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]),
                                      "--method", "srste", "--qat-epochs", "0.5", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "qat.epochs applies to methods that shrink" in result.output
    result = CliRunner().invoke(app, ["prune", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]),
                                      "--method", "l1-structured", "--qat-epochs", "-1", "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "qat.epochs" in result.output
