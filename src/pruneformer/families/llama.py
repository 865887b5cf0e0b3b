"""Llama and Mistral: pre-RMSNorm decoders, grouped-query attention, rotary positions, SwiGLU, no biases.

A cut removes heads by key-value group (a kept KV head keeps all the query heads that read it, so
``num_key_value_groups`` is unchanged) and FFN units with their gate and up rows together.
"""

from .base import Family, register_family

LLAMA_ROLES = {
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_in": "mlp.up_proj",
    "ffn_out": "mlp.down_proj",
}
#: A pre-norm decoder adds o_proj's output to the layer's input, down_proj's to the post-attention norm's input.
LLAMA_RESIDUALS = {"attn_out": ("", 0, "hidden_states"), "ffn_out": ("post_attention_layernorm", 0, "hidden_states")}

LLAMA = register_family(Family("llama", ("llama", "mistral"), "layers", LLAMA_ROLES, attention_path="self_attn",
                               causal_lm=True, rotary=True, cut="module-swap",
                               kv_head_config_key="num_key_value_heads", head_module="score",
                               residual_inputs=LLAMA_RESIDUALS))
