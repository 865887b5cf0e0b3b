"""Model families: one module per family, one registry (:mod:`.base`). Importing this package registers the
built-in families."""

from . import (  # noqa: F401
           albert,
           bert,
           deberta_v2,
           dinov2,
           distilbert,
           electra,
           ernie,
           gpt2,
           llama,
           modernbert,
           qwen2,
           roberta,
           vit,
)
from .base import (
           Family,
           families,
           family_for_type,
           family_of,
           register_family,
           supported_model_types,
           unregister_family,
)

__all__ = ["Family", "families", "family_for_type", "family_of", "register_family", "supported_model_types",
           "unregister_family"]
