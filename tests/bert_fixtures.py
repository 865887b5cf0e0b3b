"""A tiny random BERT classifier (hidden 64, 4 heads of 16, FFN 128) with non-zero biases everywhere.

Shared by the compression and MLPruning tests: non-zero biases make the bias folding of physical slicing
really matter, and eager attention returns attention probabilities.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

HIDDEN, HEADS, FFN, HEAD_DIM = 64, 4, 128, 16


def tiny_bert(seed: int = 0, layers: int = 3, labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=32, num_labels=labels, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.2)
    return model


def token_batch(seed: int, size: int, length: int) -> dict[str, torch.Tensor]:
    """Random token ids with two padded rows."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (size, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, length * 2 // 3:] = 0
    mask[3, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}
