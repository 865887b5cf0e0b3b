"""A model family added from outside pruneformer's source: one module, one ``register_family`` call.

Megatron-BERT (pre-LayerNorm BERT) is not a built-in family; registering it here is all it takes for targets,
N:M masks, MLPruning / L1 and the physical cut to work on it (``tests/compress/test_family_plugin.py``)."""

from __future__ import annotations

from pruneformer.families import Family, register_family

MEGATRON_BERT = Family(
    "megatron-bert", ("megatron-bert",), "encoder.layer",
    {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
     "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    attention_path="attention.self", head_size_attribute="attention_head_size", cut="module-swap")


def register() -> Family:
    return register_family(MEGATRON_BERT, replace=True)
