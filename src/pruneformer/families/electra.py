"""ELECTRA discriminators: BERT's layer layout behind an optional embedding projection, their own head."""

from .base import Family, register_family
from .bert import BERT_RESIDUALS, BERT_ROLES

ELECTRA = register_family(Family("electra", ("electra",), "encoder.layer", BERT_ROLES,
                                 attention_path="attention.self", head_size_attribute="attention_head_size",
                                 cut="module-swap", residual_inputs=BERT_RESIDUALS, pooled_token=0))
