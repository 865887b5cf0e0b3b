"""ModernBERT: pre-LayerNorm encoder with rotary positions, alternating local / global attention, a fused
query-key-value Linear (``Wqkv``) and a GLU FFN whose input Linear (``Wi``) holds gate and up halves.

N:M and unstructured masks apply to its four Linears per layer (the fused ones as GPT-2's ``c_attn``: every
output row is an independent dot product, so row-wise patterns are unaffected by the fusion). Physical cuts
are refused: a head or unit cut would have to split the fused Linears.
"""

from .base import Family, register_family

MODERNBERT = register_family(Family(
    "modernbert", ("modernbert",), "layers",
    {"qkv": "attn.Wqkv", "attn_out": "attn.Wo", "ffn_in": "mlp.Wi", "ffn_out": "mlp.Wo"},
    attention_path="attn", rotary=True, activation_config_key="hidden_activation",
    no_cut_reason="its query, key and value share one fused Linear (Wqkv) and its FFN input fuses the GLU's "
    "gate and up halves (Wi), which a head or unit cut would have to split"))
