"""ALBERT: BERT's layer, but one set of layer weights shared by every depth (``albert_layer_groups``), and a
factorised embedding (``embedding_hidden_mapping_in``, not a target: it is not inside a layer).

The layer stack pruneformer sees is the shared group's ``albert_layers`` (one layer in every released
checkpoint): a mask on it applies at every depth, which is what sharing means. Configs with more than one
layer group or more than one layer per group are refused (their other groups would be left unpruned).
Physical cuts are refused: the attention block holds its own output LayerNorm and residual, so a layer
whose heads are all cut needs a block the cut does not build yet.
"""

from .base import Family, register_family

ALBERT = register_family(Family(
    "albert", ("albert",), "albert_layer_groups.0.albert_layers",
    {"query": "attention.query", "key": "attention.key", "value": "attention.value", "attn_out": "attention.dense",
     "ffn_in": "ffn", "ffn_out": "ffn_output"},
    attention_path="attention", head_size_attribute="attention_head_size",
    no_cut_reason="its attention block holds its own LayerNorm and residual, and one layer's weights serve every "
    "depth; a cut of that shared layer is not built",
    config_equals={"num_hidden_groups": 1, "inner_group_num": 1}))
