"""``pruneformer spp-search`` then ``spp-extract`` on the tiny model: smaller models that reload, and the
one-line errors (bad ratio, no path record, a record from another model)."""

from __future__ import annotations

import copy
import json
import shutil

import torch
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.models.saved import load_pruned_model

runner = CliRunner()


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert all(w in lines[0] for w in words), lines[0]


def test_search_extract_reload_and_errors(tiny_model_dir, tiny_task, tmp_path):
    out = tmp_path / "search"
    args = ["spp-search", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]), "--max-length", "16",
            "--dense-epochs", "0", "--epochs", "1", "--alpha", "5", "--nu", "20", "--lambda", "1",
            "--finetune-epochs", "0", "--quiet", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "spp_search.json").read_text())
    assert summary["steps"] == 8 and (out / "model" / "spp_path.safetensors").is_file() and (out / "spp_path.png").is_file()

    result = runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.3", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "spp_extract.json").read_text())
    assert [r["ratio"] for r in rows] == [0.3, 0.5]
    dense, _, _ = load_pruned_model(out / "model")
    dense_params = sum(p.numel() for p in dense.parameters())
    # tiny BERT: hidden 64, 2 layers x 4 heads x 16 dims, FFN 128; shared masks: 16 qk + 16 vo dims, 128 units per layer
    for row in rows:
        removed_qk = round(row["ratio"] * 32)
        removed_ffn = round(row["ratio"] * 256)
        implied = removed_qk * 4 * 2 * 65 + removed_qk * 4 * 129 + removed_ffn * 129
        assert row["parameters"] == dense_params - implied
        model, _, info = load_pruned_model(row["model_dir"])
        assert sum(p.numel() for p in model.parameters()) == row["parameters"] < dense_params
        assert info["ratio"] == row["ratio"]
        ids = torch.randint(5, 29, (3, 10))
        again, _, _ = load_pruned_model(row["model_dir"])
        assert torch.equal(model.eval()(input_ids=ids).logits, again.eval()(input_ids=ids).logits)
    assert (out / "accuracy_vs_ratio.png").is_file()

    one_line_error(runner.invoke(app, ["spp-extract", str(out), "--ratio", "1.0"]), "outside [0, 1)")
    one_line_error(runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.2", "--ratio=-0.5"]), "outside [0, 1)")
    one_line_error(runner.invoke(app, ["spp-extract", str(tiny_model_dir), "--ratio", "0.3"]), "not an SPP search directory")
    # a search directory whose path record is gone
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    (bare / "model" / "spp_path.safetensors").unlink()
    one_line_error(runner.invoke(app, ["spp-extract", str(bare), "--ratio", "0.3"]), "No SPP path record")
    # a record from another model: the same search directory with different weights
    other = tmp_path / "other"
    shutil.copytree(out, other)
    model, tokenizer, info = load_pruned_model(other / "model")
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight.mul_(1.01)
    model.save_pretrained(other / "model")
    one_line_error(runner.invoke(app, ["spp-extract", str(other), "--ratio", "0.3"]), "another model")


def test_search_and_extract_a_grouped_rotary_llama(tiny_task, tmp_path):
    """The same two commands on a Llama classifier (2 KV heads, rotary pairs, SwiGLU): the cut models reload
    with plain transformers and export to ONNX with parity (each layer reads its kept pairs' cos / sin)."""
    from conftest import VOCAB
    from llm_fixtures import save_tiny_llama_dir
    from transformers import AutoModelForSequenceClassification

    from pruneformer.deploy.export import export_model

    llama = save_tiny_llama_dir(tmp_path / "llama", VOCAB)
    out = tmp_path / "search"
    result = runner.invoke(app, ["spp-search", "--model", str(llama), "--data", str(tiny_task["train"]),
                                 "--max-length", "16", "--dense-epochs", "1", "--epochs", "1", "--alpha", "5",
                                 "--nu", "20", "--finetune-epochs", "0", "--quiet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "spp_extract.json").read_text())[0]
    dense, _, _ = load_pruned_model(out / "model")
    assert row["parameters"] < sum(p.numel() for p in dense.parameters())
    model = AutoModelForSequenceClassification.from_pretrained(row["model_dir"], trust_remote_code=True).eval()
    assert sum(p.numel() for p in model.parameters()) == row["parameters"]
    kept = [layer.self_attn.rotary_index.tolist() for layer in model.inner.model.layers
            if hasattr(layer.self_attn, "rotary_index")]
    assert kept  # at least one layer kept fewer pairs; head_dim 8: dimension d rotates with d + 4
    assert all(sorted(k) == k and {d + 4 for d in k if d < 4} == {d for d in k if d >= 4} for k in kept)
    record = export_model(row["model_dir"], tmp_path / "onnx", log=lambda line: None)
    assert record["check"]["fp32"]["max_abs_diff"] <= 1e-4


def test_extract_distils_and_ends_on_the_int8_grid(tiny_model_dir, tiny_task, tmp_path):
    """The cut models get the retraining every shrunk model gets (``runs/retraining.py``): a fine-tune distilled
    from the searched model, then quantization-aware fine-tuning whose weights end on the export's int8 grid;
    the extraction records both, a resume with the same settings reuses the cut, other settings redo it."""
    from pruneformer.deploy.export import export_model
    from pruneformer.deploy.fake_quant import quantize_weight
    from pruneformer.methods.spp.record import PathRecord
    from pruneformer.runs.recipe import load_recipe
    from pruneformer.runs.solution_path import cut, load_task

    out = tmp_path / "search"
    result = runner.invoke(app, ["spp-search", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]),
                                 "--max-length", "16", "--dense-epochs", "0", "--epochs", "1", "--alpha", "5",
                                 "--nu", "20", "--finetune-epochs", "1", "--qat-epochs", "1", "--lr", "1e-3",
                                 "--quiet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "spp_extract.json").read_text())[0]
    assert row["distilled"] and row["finetune_steps"] == row["qat_steps"] == 8  # 256 examples / 32 per batch
    assert row["qat"]["per_channel"] and row["qat"]["epochs"] == 1.0 and row["qat"]["int8_linears"] > 0
    model, _, info = load_pruned_model(row["model_dir"])
    assert info["qat"] == row["qat"]
    on_grid = [torch.equal(quantize_weight(m.weight.detach()), m.weight.detach())
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.weight.numel()
               and not n.endswith("classifier")]
    assert len(on_grid) == row["qat"]["int8_linears"] and all(on_grid)
    # export reads the QAT record: a per-tensor export of a per-channel QAT model is warned about
    warned: list[str] = []
    export_model(row["model_dir"], tmp_path / "onnx", quantize="int8", per_channel=False, log=warned.append)
    assert any(line.startswith("warning: this model was fine-tuned for int8 per channel") for line in warned)

    state = json.loads((out / "extract_state.json").read_text())["done"]["extract-0.50"]
    assert state["retraining"]["distill"] and state["retraining"]["qat"]["epochs"] == 1.0
    result = runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.5", "--resume", "--quiet"])
    assert result.exit_code == 0 and json.loads((out / "spp_extract.json").read_text())[0]["scores"] == row["scores"]
    result = runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.5", "--resume", "--qat-epochs", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "spp_extract.json").read_text())[0]
    assert "qat" not in again and "qat_steps" not in again and again["finetune_steps"] == 8
    one_line_error(runner.invoke(app, ["spp-extract", str(out), "--ratio", "0.5", "--qat-epochs", "-1"]), "negative")

    # distillation is what changes the fine-tune: the same cut without a teacher trains to other weights
    # (the search's recipe with its QAT off, so that the fine-tune is all that differs)
    searched, tokenizer, _ = load_pruned_model(out / "model")
    recipe = load_recipe(out / "recipe.yaml")
    recipe = recipe.model_copy(update={"qat": recipe.qat.model_copy(update={"epochs": 0.0})})
    tokenized, collator = load_task(recipe, searched, tokenizer)
    keep = PathRecord.load(out / "model").keep(0.5)
    plain, plain_row = cut(searched, keep, recipe, tokenized, collator, 1.0)
    taught, taught_row = cut(searched, keep, recipe, tokenized, collator, 1.0, teacher=copy.deepcopy(searched))
    assert not plain_row["distilled"] and taught_row["distilled"] and "qat" not in taught_row
    ids = torch.randint(5, 29, (3, 10))
    assert not torch.allclose(plain.eval()(input_ids=ids).logits, taught.eval()(input_ids=ids).logits)
    assert all(p.requires_grad for p in searched.parameters())  # the searched model is left as it was
