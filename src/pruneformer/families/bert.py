"""BERT, and the shrunk BERT pruneformer's structured runs leave (``compress/modeling_shrunk_bert.py``)."""

from .base import Family, register_family

#: The Linears of a BERT-layout layer; RoBERTa, ELECTRA and ERNIE share them.
BERT_ROLES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}

BERT = register_family(Family("bert", ("bert", "shrunk-bert"), "encoder.layer", BERT_ROLES,
                              attention_path="attention.self", head_size_attribute="attention_head_size",
                              cut="shrunk-bert"))
