"""ERNIE: BERT's layer layout with task-type embeddings."""

from .base import Family, register_family
from .bert import BERT_RESIDUALS, BERT_ROLES

ERNIE = register_family(Family("ernie", ("ernie",), "encoder.layer", BERT_ROLES,
                               attention_path="attention.self", head_size_attribute="attention_head_size",
                               cut="module-swap", residual_inputs=BERT_RESIDUALS, pooled_token=0))
