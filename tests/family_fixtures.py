"""Tiny random task models of every family pruneformer cuts (hidden 64, 2 layers, 4 heads), with random
biases (so removed units leave constants that the cut must fold), and an input batch for each."""

from __future__ import annotations

from typing import Callable

import torch
import transformers as T
from torch import nn

SMALL = dict(num_hidden_layers=2, num_labels=3)
TEXT = dict(vocab_size=100, **SMALL)


def _text(cls, config) -> Callable[[], nn.Module]:
    return lambda: cls(config)


#: family name -> (model builder, modality). Llama and Qwen2 use grouped-query attention (2 KV heads).
BUILDERS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "bert": (lambda: T.BertForSequenceClassification(T.BertConfig(hidden_size=64, num_attention_heads=4,
                                                                   intermediate_size=128, **TEXT)), "text"),
    "roberta": (lambda: T.RobertaForSequenceClassification(T.RobertaConfig(hidden_size=64, num_attention_heads=4,
                                                                            intermediate_size=128, **TEXT)), "text"),
    "electra": (lambda: T.ElectraForSequenceClassification(T.ElectraConfig(hidden_size=64, embedding_size=32,
                                                                            num_attention_heads=4, intermediate_size=128,
                                                                            **TEXT)), "text"),
    "distilbert": (lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(dim=64, n_layers=2, n_heads=4,
                                                                                     hidden_dim=128, vocab_size=100,
                                                                                     num_labels=3)), "text"),
    "llama": (lambda: T.LlamaForSequenceClassification(T.LlamaConfig(hidden_size=64, num_attention_heads=4,
                                                                      num_key_value_heads=2, intermediate_size=128,
                                                                      pad_token_id=0, **TEXT)), "text"),
    "qwen2": (lambda: T.Qwen2ForSequenceClassification(T.Qwen2Config(hidden_size=64, num_attention_heads=4,
                                                                      num_key_value_heads=2, intermediate_size=128,
                                                                      pad_token_id=0, **TEXT)), "text"),
    "vit": (lambda: T.ViTForImageClassification(T.ViTConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                                            image_size=28, patch_size=7, **SMALL)), "image"),
    "dinov2": (lambda: T.Dinov2ForImageClassification(T.Dinov2Config(hidden_size=64, num_attention_heads=4, image_size=28,
                                                                     patch_size=14, layerscale_value=0.5, **SMALL)),
               "image"),
}


def tiny_family_model(name: str, seed: int = 0) -> nn.Module:
    """A tiny random classifier of family ``name`` in eval mode, biases drawn N(0, 0.2)."""
    torch.manual_seed(seed)
    model = BUILDERS[name][0]().eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias"):
                param.normal_(0, 0.2)
    return model


def family_batch(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Inputs for a family's model: token ids with padding in the second row, or 28 x 28 images."""
    generator = torch.Generator().manual_seed(seed)
    if BUILDERS[name][1] == "image":
        return {"pixel_values": torch.randn(2, 3, 28, 28, generator=generator)}
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(5, 100, (2, 9), generator=generator), "attention_mask": mask}
