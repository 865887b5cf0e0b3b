"""GPT-2: ``Conv1D`` layers (weights stored [in, out]); Q, K and V fused into one ``c_attn``."""

from .base import Family, register_family

GPT2 = register_family(Family(
    "gpt2", ("gpt2",), "h",
    {"qkv": "attn.c_attn", "attn_out": "attn.c_proj", "ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"},
    causal_lm=True, no_cut_reason="its query, key and value share one fused Conv1D (c_attn), which a head cut "
    "would have to split"))
