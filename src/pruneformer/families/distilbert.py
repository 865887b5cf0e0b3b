"""DistilBERT: six BERT-like layers under ``transformer.layer`` with their own Linear names."""

from .base import Family, register_family

DISTILBERT = register_family(Family(
    "distilbert", ("distilbert",), "transformer.layer",
    {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
     "attn_out": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
    attention_path="attention", head_size_attribute="attention_head_size", cut="module-swap",
    activation_config_key="activation"))
