"""Qwen2: Llama's layout with biases on the query, key and value projections."""

from .base import Family, register_family
from .llama import LLAMA_RESIDUALS, LLAMA_ROLES

QWEN2 = register_family(Family("qwen2", ("qwen2",), "layers", LLAMA_ROLES, attention_path="self_attn",
                               causal_lm=True, rotary=True, cut="module-swap",
                               kv_head_config_key="num_key_value_heads", head_module="score",
                               residual_inputs=LLAMA_RESIDUALS))
