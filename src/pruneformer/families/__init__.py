"""Model families: one module per family, one registry (:mod:`.base`). Importing this package registers the
built-in families."""

from . import bert, deberta_v2, dinov2, distilbert, electra, ernie, gpt2, llama, qwen2, roberta, vit  # noqa: F401
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
