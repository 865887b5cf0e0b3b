"""pruneformer: prune pretrained transformers into hardware-friendly sparse models.

The Python API, for use in your own training loop::

    from pruneformer import ADMMPruner, resolve_targets
    pruner = ADMMPruner("2:4", rho=1e-3, interval=30)
    pruner.attach(model, resolve_targets(model))
    ...  # call its hooks around each step, then pruner.finalize()

and the whole pipeline (what ``pruneformer prune`` runs): :func:`pruneformer.runs.pipeline.run`.
"""

from .core.patterns import compute_masks, parse_pattern
from .core.targets import resolve_targets
from .errors import PruneformerError
from .methods import (
    ADMMPruner,
    ALPSPruner,
    MagnitudePruner,
    MaskedFineTuner,
    PruningMethod,
    SparseGPTPruner,
    SRSTEPruner,
    WandaPruner,
)
from .models.saved import load_pruned_model, save_pruned_model
from .version import __version__

__all__ = [
    "ADMMPruner", "ALPSPruner", "MagnitudePruner", "MaskedFineTuner", "PruneformerError", "PruningMethod", "SRSTEPruner",
    "SparseGPTPruner", "WandaPruner",
    "compute_masks", "load_pruned_model", "parse_pattern", "resolve_targets", "save_pruned_model",
]
