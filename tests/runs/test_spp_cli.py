"""``pruneformer spp-search`` then ``spp-extract`` on the tiny model: smaller models that reload, and the
one-line errors (bad ratio, no path record, a record from another model)."""

from __future__ import annotations

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
