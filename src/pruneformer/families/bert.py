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
#: Where a BERT-layout layer's residual stream meets each output Linear: ``SelfOutput/Output(hidden, input)``.
BERT_RESIDUALS = {"attn_out": ("attention.output", 1, "input_tensor"), "ffn_out": ("output", 1, "input_tensor")}

BERT = register_family(Family("bert", ("bert", "shrunk-bert"), "encoder.layer", BERT_ROLES,
                              attention_path="attention.self", head_size_attribute="attention_head_size",
                              cut="shrunk-bert", residual_inputs=BERT_RESIDUALS, pooled_token=0))
