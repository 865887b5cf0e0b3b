"""DeBERTa-v2/v3: BERT-like layers whose disentangled attention also projects relative positions with the
query and key Linears; N:M and unstructured masks apply to its roles, physical cuts do not (yet)."""

from .base import Family, register_family

DEBERTA_V2 = register_family(Family(
    "deberta-v2", ("deberta-v2",), "encoder.layer",
    {"query": "attention.self.query_proj", "key": "attention.self.key_proj", "value": "attention.self.value_proj",
     "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    no_cut_reason="its disentangled attention reuses the query and key projections on relative-position "
    "embeddings, which a head cut would have to follow"))
