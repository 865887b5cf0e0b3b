"""RoBERTa and its relatives (XLM-R, CamemBERT): BERT's layer layout, their own embeddings (positions offset
by the padding index) and classification head, so a cut keeps their classes and swaps Linears."""

from .base import Family, register_family
from .bert import BERT_RESIDUALS, BERT_ROLES

ROBERTA = register_family(Family("roberta", ("roberta", "xlm-roberta", "camembert"), "encoder.layer", BERT_ROLES,
                                 attention_path="attention.self", head_size_attribute="attention_head_size",
                                 cut="module-swap", residual_inputs=BERT_RESIDUALS, pooled_token=0))
