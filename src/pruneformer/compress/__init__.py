"""Physical compression: models whose layers really are smaller, saved so plain transformers loads them.

* :mod:`.modeling_shrunk_bert`: a self-contained transformers model with per-layer head counts, head
  widths, FFN widths and kept output rows (copied into every saved model directory);
* :mod:`.slicing`: :func:`shrink_model` cuts a dense BERT down to a per-layer :class:`LayerPlan`;
* :mod:`.io`: :func:`save_shrunk_model` / :func:`load_shrunk_model`.
"""

from .io import load_shrunk_model, register_auto_classes, save_shrunk_model
from .modeling_shrunk_bert import ShrunkBertConfig, ShrunkBertForSequenceClassification, count_encoder_parameters
from .slicing import LayerPlan, kept_encoder_weights, shrink_model

register_auto_classes()

__all__ = [
    "LayerPlan", "ShrunkBertConfig", "ShrunkBertForSequenceClassification", "count_encoder_parameters",
    "kept_encoder_weights", "load_shrunk_model", "register_auto_classes", "save_shrunk_model", "shrink_model",
]
