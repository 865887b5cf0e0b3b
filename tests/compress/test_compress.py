"""Physical compression: slicing zeroed units is exact, and a shrunk model round-trips through plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from bert_fixtures import FFN, HEAD_DIM, HEADS, HIDDEN, tiny_bert, token_batch
from transformers import (
    BertForSequenceClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from pruneformer.compress import count_encoder_parameters, kept_encoder_weights, shrink_model
from pruneformer.core.structure import LayerPlan
from pruneformer.errors import ModelError
from pruneformer.models.saved import load_pruned_model, save_shrunk_model


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    return token_batch(seed, 4, 12)


def heads_rows(heads: list[int], dims: list[int]) -> list[int]:
    return [h * HEAD_DIM + d for h in heads for d in dims]


PLANS = [  # one layer of each kind: partial everything, all heads removed, FFN removed
    LayerPlan(heads=[0, 2], qk_dims=list(range(0, 16, 2)), v_dims=list(range(12)), ffn_units=list(range(0, 128, 3)),
              attn_out_rows=list(range(0, 64, 2)), ffn_out_rows=list(range(40))),
    LayerPlan(heads=[], ffn_units=list(range(100))),
    LayerPlan(heads=[1, 2, 3], ffn_units=[], ffn_out_rows=list(range(10, 64))),
]


@torch.no_grad()
def zero_out(model: BertForSequenceClassification, plans: list[LayerPlan]) -> None:
    """Mask the weights (never the biases) of everything the plans remove, the way a pruning method does."""
    for layer, plan in zip(model.bert.encoder.layer, plans):
        attn = layer.attention.self
        heads = plan.heads if plan.heads is not None else list(range(HEADS))
        qk = plan.qk_dims if plan.qk_dims is not None else list(range(HEAD_DIM))
        v = plan.v_dims if plan.v_dims is not None else list(range(HEAD_DIM))
        keep_k = torch.zeros(HIDDEN, dtype=torch.bool)
        keep_k[heads_rows(heads, qk)] = True
        keep_v = torch.zeros(HIDDEN, dtype=torch.bool)
        keep_v[heads_rows(heads, v)] = True
        attn.key.weight[~keep_k] = 0  # key rows only: the query side stays dense, the score term is constant
        attn.value.weight[~keep_v] = 0
        if plan.ffn_units is not None:
            keep = torch.zeros(FFN, dtype=torch.bool)
            keep[plan.ffn_units] = True
            layer.intermediate.dense.weight[~keep] = 0
        for rows, linear in ((plan.attn_out_rows, layer.attention.output.dense), (plan.ffn_out_rows, layer.output.dense)):
            if rows is not None:
                keep = torch.zeros(HIDDEN, dtype=torch.bool)
                keep[rows] = True
                linear.weight[~keep] = 0


def test_identity_plan_is_exact():
    model = tiny_bert()
    shrunk = shrink_model(model, [LayerPlan()] * 3).eval()
    torch.testing.assert_close(shrunk(**batch()).logits, model(**batch()).logits, atol=1e-6, rtol=0)


def test_slicing_zeroed_units_leaves_outputs_unchanged():
    model = tiny_bert()
    zero_out(model, PLANS)
    shrunk = shrink_model(model, PLANS).eval()
    assert shrunk.config.layer_num_heads == [2, 0, 3]
    assert shrunk.config.layer_qk_head_dim == [8, 0, 16] and shrunk.config.layer_v_head_dim == [12, 0, 16]
    assert shrunk.config.layer_intermediate_size == [43, 100, 0]
    dense_out = model(**batch(), output_hidden_states=True)
    shrunk_out = shrunk(**batch(), output_hidden_states=True)
    torch.testing.assert_close(shrunk_out.logits, dense_out.logits, atol=1e-5, rtol=0)
    for a, b in zip(shrunk_out.hidden_states, dense_out.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert kept_encoder_weights(shrunk) == count_encoder_parameters(shrunk.config)
    assert kept_encoder_weights(shrunk) < kept_encoder_weights(model) / 2


def test_slicing_live_units_changes_outputs():
    """The same plan on a model whose removed units still carry weight: the test above can fail."""
    model = tiny_bert()
    shrunk = shrink_model(model, PLANS).eval()
    assert (shrunk(**batch()).logits - model(**batch()).logits).abs().max() > 1e-3


def test_attention_probabilities_of_kept_heads_match():
    model = tiny_bert()
    plans = [LayerPlan(heads=[1, 3]), LayerPlan(), LayerPlan(heads=[0])]
    zero_out(model, plans)
    shrunk = shrink_model(model, plans).eval()
    dense = model(**batch(), output_attentions=True).attentions
    small = shrunk(**batch(), output_attentions=True).attentions
    for plan, a, b in zip(plans, small, dense):
        torch.testing.assert_close(a, b[:, plan.heads if plan.heads is not None else slice(None)], atol=1e-6, rtol=0)


def test_training_mode_and_gradients_flow():
    shrunk = shrink_model(tiny_bert(), PLANS).train()
    out = shrunk(**batch(), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert shrunk.bert.encoder.layer[0].attention.output.bias.grad.abs().sum() > 0
    assert shrunk.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_bad_plan_and_unsupported_model_type():
    with pytest.raises(ValueError, match="distinct"):
        shrink_model(tiny_bert(), [LayerPlan(heads=[0, 0]), LayerPlan(), LayerPlan()])
    with pytest.raises(ValueError, match="2 layer plans for 3 layers"):
        shrink_model(tiny_bert(), [LayerPlan(), LayerPlan()])
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=40, n_embd=64, n_layer=1, n_head=4, pad_token_id=0))
    with pytest.raises(ModelError) as err:
        shrink_model(gpt2, [LayerPlan()])
    assert "gpt2" in str(err.value) and "fused" in str(err.value) and "\n" not in str(err.value)


LOAD_WITH_PLAIN_TRANSFORMERS = textwrap.dedent("""
    import json, sys, torch
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    inputs = json.loads(sys.argv[2])
    with torch.no_grad():
        logits = model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
    print(json.dumps({"logits": logits.tolist(), "class": type(model).__name__,
                      "pruneformer_imported": any(m.startswith("pruneformer") for m in sys.modules)}))
""")


def test_save_load_round_trip_with_plain_transformers(tmp_path):
    model = tiny_bert()
    zero_out(model, PLANS)
    shrunk = shrink_model(model, PLANS).eval()
    inputs = batch()
    with torch.no_grad():
        expected = shrunk(**inputs).logits
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good"]) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    directory = save_shrunk_model(shrunk, tokenizer, tmp_path / "shrunk", {"method": "test", "pattern": None})
    model.save_pretrained(tmp_path / "dense")
    assert (directory / "modeling_shrunk_bert.py").is_file()
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "shrunk-bert" and "AutoModelForSequenceClassification" in config["auto_map"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    payload = json.dumps({k: v.tolist() for k, v in inputs.items()})
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_PLAIN_TRANSFORMERS, str(directory), payload],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["class"] == "ShrunkBertForSequenceClassification" and not result["pruneformer_imported"]
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=0, rtol=0)

    reloaded, _, info = load_pruned_model(directory)
    assert info["method"] == "test"
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, expected, atol=0, rtol=0)

    # the file shrinks by the weights removed: compare the byte saving with the parameter saving
    dense_params = sum(p.numel() for p in model.parameters())
    shrunk_params = sum(p.numel() for p in shrunk.parameters())
    dense_bytes = (tmp_path / "dense" / "model.safetensors").stat().st_size
    shrunk_bytes = (directory / "model.safetensors").stat().st_size
    assert (dense_bytes - shrunk_bytes) == pytest.approx(4 * (dense_params - shrunk_params), rel=0.02)
