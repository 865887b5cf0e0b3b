"""ViT and DeiT: pre-LayerNorm image encoders over patch embeddings (plus a class token)."""

from .base import Family, register_family

VIT_ROLES = {
    "query": "attention.q_proj",
    "key": "attention.k_proj",
    "value": "attention.v_proj",
    "attn_out": "attention.o_proj",
    "ffn_in": "mlp.fc1",
    "ffn_out": "mlp.fc2",
}

VIT = register_family(Family("vit", ("vit", "deit"), "layers", VIT_ROLES, attention_path="attention",
                             modality="image", cut="module-swap"))
