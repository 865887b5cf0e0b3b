"""Decoder LLM support: Llama and GPT-2 targets (Conv1D stored [in, out]), token blocks, perplexity,
and ADMM on a tiny Llama."""

from __future__ import annotations

import math

import pytest
import torch
from llm_fixtures import random_tokens, tiny_gpt2, tiny_llama
from torch.nn import functional as F

from pruneformer import ADMMPruner, MagnitudePruner, parse_pattern, resolve_targets
from pruneformer.errors import ModelError, PatternError
from pruneformer.models.llm import load_causal_lm, perplexity, token_blocks


def test_llama_targets_every_projection_with_roles():
    model = tiny_llama()
    targets = resolve_targets(model)
    assert len(targets) == 2 * 7
    assert [t.role for t in targets[:7]] == ["query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out"]
    assert targets[1].name == "model.layers.0.self_attn.k_proj" and targets[1].shape == (16, 32)
    assert targets[6].shape == (32, 64) and not targets[6].transposed
    assert [t.name for t in resolve_targets(model, include=["ffn_gate"])] == [
        "model.layers.0.mlp.gate_proj", "model.layers.1.mlp.gate_proj"]


def test_gpt2_conv1d_targets_are_seen_as_out_by_in():
    model = tiny_gpt2()
    targets = resolve_targets(model)
    assert [t.role for t in targets[:4]] == ["qkv", "attn_out", "ffn_in", "ffn_out"]
    c_fc = targets[2]
    assert c_fc.transposed and tuple(c_fc.module.weight.shape) == (32, 128)  # stored [in, out]
    assert c_fc.shape == (128, 32)                                          # seen [out, in]
    assert c_fc.linear_weight.data_ptr() == c_fc.module.weight.data_ptr()    # a view, not a copy
    x = torch.randn(3, 32)
    torch.testing.assert_close(c_fc.module(x), F.linear(x, c_fc.linear_weight, c_fc.module.bias))


def test_gpt2_nm_groups_run_along_the_input_dimension():
    model = tiny_gpt2()
    targets = resolve_targets(model)
    MagnitudePruner("2:4").attach(model, targets)
    for target in targets:
        stored = target.module.weight.detach()  # [in, out]: groups are 4 consecutive *rows* of each column
        per_group = (stored != 0).reshape(stored.shape[0] // 4, 4, stored.shape[1]).sum(dim=1)
        assert int(per_group.max()) == 2 and int(per_group.min()) == 2
        # the projection of the [out, in] view is exactly what was kept
        assert parse_pattern("2:4").satisfied(target.linear_weight)


def test_gpt2_pattern_that_only_fits_the_stored_layout_is_refused():
    """c_fc stores [in 32, out 128]: 2:64 would fit its stored last dimension, but not its inputs."""
    model = tiny_gpt2()
    c_fc = [t for t in resolve_targets(model) if t.role == "ffn_in"]
    with pytest.raises(PatternError, match="in_features divisible by 64, but layer 'transformer.h.0.mlp.c_fc' has 32"):
        MagnitudePruner("2:64").attach(model, c_fc)


def test_token_blocks_are_the_concatenated_stream_cut_into_full_blocks(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["the film was good", "a dull plot", "really lovely acting and story"]
    stream = [i for t in texts for i in tokenizer(t + "\n", add_special_tokens=False)["input_ids"]]
    blocks = token_blocks(texts, tokenizer, seq_len=3)
    assert blocks.shape == (len(stream) // 3, 3)
    assert blocks.reshape(-1).tolist() == stream[: blocks.numel()]
    assert token_blocks(texts, tokenizer, seq_len=3, max_blocks=2).tolist() == blocks[:2].tolist()


def test_perplexity_matches_a_hand_computation():
    model = tiny_llama()
    blocks = random_tokens(5, 7)
    got = perplexity(model, blocks, batch_size=2)  # 2 + 2 + 1 blocks: batch boundaries must not matter
    total, count = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            logits = model(input_ids=block[None]).logits[0].double()
            for t in range(len(block) - 1):
                probs = torch.softmax(logits[t], dim=-1)
                total -= math.log(float(probs[block[t + 1]]))
                count += 1
    assert got["tokens"] == count == 5 * 6
    assert got["nll"] == pytest.approx(total / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_admm_then_hard_prune_on_tiny_llama_is_exactly_2_4_with_finite_loss():
    model = tiny_llama().train()
    targets = resolve_targets(model)
    batch = random_tokens(4, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = ADMMPruner("2:4", rho=1e-2, interval=3)
    pruner.attach(model, targets)
    losses = []
    for step in range(12):
        pruner.before_forward(step)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        pruner.after_backward(step)
        pruner.before_optimizer_step(step)
        optimizer.step()
        optimizer.zero_grad()
        pruner.after_optimizer_step(step)
        losses.append(loss.item())
    masks = pruner.finalize()
    assert len(pruner.history) == 1 + 4 and all(math.isfinite(r["primal_residual"]) for r in pruner.history)
    assert losses[-1] < losses[0]  # the W-step still trains the LM
    pattern = parse_pattern("2:4")
    for target in targets:
        weight = target.linear_weight.detach()
        counts = (weight != 0).reshape(-1, 4).sum(dim=1)
        assert int(counts.max()) == 2 and pattern.satisfied(weight)
        assert torch.equal(weight != 0, masks[target.name] & (weight != 0))
    with torch.no_grad():
        assert math.isfinite(float(model(input_ids=batch, labels=batch).loss))


def test_admm_penalty_gradient_is_exact_on_gpt2_conv1d():
    """rho (W - Z + U) must land on the stored [in, out] gradient transposed, as autograd would put it."""
    model, reference = tiny_gpt2(), tiny_gpt2()  # eval mode: no dropout, so both see the same forward
    targets, ref_targets = resolve_targets(model), resolve_targets(reference)
    batch = random_tokens(2, 8)
    pruner = ADMMPruner("2:4", rho=0.3, interval=100, penalty="gradient")
    pruner.attach(model, targets)
    torch.manual_seed(0)
    pruner.U = [torch.randn_like(u) for u in pruner.U]
    model(input_ids=batch, labels=batch).loss.backward()
    pruner.after_backward(0)
    pruner.before_optimizer_step(0)
    loss = reference(input_ids=batch, labels=batch).loss
    for t, z, u in zip(ref_targets, pruner.Z, pruner.U):
        loss = loss + 0.3 / 2 * (t.linear_weight - z + u).pow(2).sum()
    loss.backward()
    for ours, theirs in zip(targets, ref_targets):
        torch.testing.assert_close(ours.module.weight.grad, theirs.module.weight.grad, rtol=1e-5, atol=1e-6)


def test_loading_refuses_an_encoder_and_a_missing_gguf(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="not a supported decoder LM"):
        load_causal_lm(tiny_model_dir)
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm(tmp_path / "nothing.gguf")
