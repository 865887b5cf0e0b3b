"""Target resolution per architecture, include/exclude, and the errors for what cannot be targeted."""

from __future__ import annotations

import pytest
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    OPTConfig,
    OPTForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from pruneformer.core.targets import ROLES, resolve_targets
from pruneformer.errors import ModelError, RecipeError

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=50)


@pytest.mark.parametrize("model", [
    BertForSequenceClassification(BertConfig(**SMALL)),
    RobertaForSequenceClassification(RobertaConfig(**SMALL, max_position_embeddings=40)),
    DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=3, n_heads=4, hidden_dim=64, vocab_size=50)),
], ids=["bert", "roberta", "distilbert"])
def test_default_targets_are_the_six_encoder_linears_per_layer(model):
    targets = resolve_targets(model)
    assert len(targets) == 3 * 6
    assert [t.role for t in targets[:6]] == list(ROLES)
    assert {t.layer for t in targets} == {0, 1, 2}
    shapes = {t.role: t.shape for t in targets}
    assert shapes["ffn_in"] == (64, 32) and shapes["ffn_out"] == (32, 64) and shapes["query"] == (32, 32)
    names = {t.name for t in targets}
    assert not any("classifier" in n or "embeddings" in n or "pooler" in n for n in names)


def test_include_and_exclude_by_role_and_regex():
    model = BertForSequenceClassification(BertConfig(**SMALL))
    assert {t.role for t in resolve_targets(model, include=["ffn_in", "ffn_out"])} == {"ffn_in", "ffn_out"}
    assert len(resolve_targets(model, exclude=[r"layer\.0\."])) == 2 * 6
    only = resolve_targets(model, include=["query"], exclude=[r"layer\.2\."])
    assert [t.name for t in only] == ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"]


def test_patterns_that_match_nothing_or_everything_are_errors():
    model = BertForSequenceClassification(BertConfig(**SMALL))
    with pytest.raises(RecipeError, match="matches no prunable layer.*Fix:"):
        resolve_targets(model, include=["decoder"])
    with pytest.raises(RecipeError, match="leave no layer"):
        resolve_targets(model, exclude=["layer"])
    with pytest.raises(RecipeError, match="regular expression"):
        resolve_targets(model, include=["(unclosed"])


def test_unsupported_architecture_is_named():
    # GPT-2 and Llama are supported now (tests/models/test_llm.py); OPT is not
    model = OPTForSequenceClassification(OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                   ffn_dim=64, word_embed_proj_dim=32, vocab_size=50))
    with pytest.raises(ModelError, match="opt.*Fix:"):
        resolve_targets(model)
