"""Adding a family is one module plus one registration (``tests/new_family_plugin.py``): nothing in
pruneformer's source changes, and every layer (targets, methods, cut, save, reload) takes it."""

from __future__ import annotations

import pytest
import torch
import transformers
from new_family_plugin import register

from pruneformer.compress import shrink_model
from pruneformer.core.patterns import parse_pattern
from pruneformer.core.targets import resolve_targets
from pruneformer.errors import ModelError
from pruneformer.families import unregister_family
from pruneformer.methods.l1_structured import L1StructuredPruner
from pruneformer.models.saved import save_shrunk_model


def megatron() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.MegatronBertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=128, vocab_size=100, num_labels=2)
    return transformers.MegatronBertForSequenceClassification(config).eval()


@pytest.fixture
def plugin():
    family = register()
    yield family
    unregister_family(family.name)


def test_unknown_family_is_refused_in_one_line_naming_the_fix():
    with pytest.raises(ModelError) as err:
        resolve_targets(megatron())
    assert "megatron-bert" in str(err.value) and "register a family" in str(err.value)


def test_registered_family_prunes_cuts_saves_and_reloads(plugin, tmp_path):
    model = megatron()
    targets = resolve_targets(model)
    assert [t.role for t in targets[:6]] == ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]
    assert parse_pattern("2:4").mask(targets[0].linear_weight).float().mean() == 0.5
    pruner = L1StructuredPruner(target=0.5)
    pruner.attach(model, targets)
    pruner.finalize()
    shrunk = shrink_model(model, pruner.layer_plans(2)).eval()
    batch = {"input_ids": torch.randint(5, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    with torch.no_grad():
        expected = model(**batch).logits
        assert (shrunk(**batch).logits - expected).abs().max() <= 1e-5
    save_shrunk_model(shrunk, None, tmp_path, {"method": "l1-structured"})
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    with torch.no_grad():
        assert (reloaded.eval()(**batch).logits - expected).abs().max() <= 1e-5
