"""Physical compression: models whose layers really are smaller.

* :mod:`.modeling_shrunk_bert`: a self-contained transformers model with per-layer head counts, head
  widths, FFN widths and kept output rows (copied into every saved model directory);
* :mod:`.slicing`: :func:`shrink_model` cuts a dense BERT down to a per-layer
  :class:`~pruneformer.core.structure.LayerPlan`;
* :mod:`.paired`: keep-masks over the paired inner dimensions (QK, VO, FFN) -> plans -> a shrunk model.

Saving and loading live in :mod:`pruneformer.models.saved` (:func:`~pruneformer.models.saved.save_shrunk_model`,
:func:`~pruneformer.models.saved.load_pruned_model`).
"""

from .modeling_shrunk_bert import ShrunkBertConfig, ShrunkBertForSequenceClassification, count_encoder_parameters
from .slicing import kept_encoder_weights, kept_per_layer, shrink_model

__all__ = [
    "ShrunkBertConfig", "ShrunkBertForSequenceClassification", "count_encoder_parameters", "kept_encoder_weights",
    "kept_per_layer", "shrink_model",
]
