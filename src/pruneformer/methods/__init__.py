"""Pruning methods, one file each, all on the lifecycle of :class:`PruningMethod`."""

from .admm import ADMMPruner
from .alps import ALPSPruner
from .base import PruningMethod
from .calibrated import CalibratedPruner
from .l1_structured import L1StructuredPruner
from .magnitude import MagnitudePruner
from .masked import MaskedFineTuner
from .mlpruning import MLPruner
from .shrinking import ShrinkingMethod
from .sparsegpt import SparseGPTPruner
from .spp.search import SPPSearch
from .srste import SRSTEPruner
from .wanda import WandaPruner

#: name -> class, for recipes and the CLI.
METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (MagnitudePruner, MaskedFineTuner, ADMMPruner, SRSTEPruner, WandaPruner, SparseGPTPruner,
                              ALPSPruner)
}

__all__ = ["ADMMPruner", "ALPSPruner", "CalibratedPruner", "L1StructuredPruner", "METHODS", "MLPruner", "MagnitudePruner",
           "MaskedFineTuner", "PruningMethod", "SPPSearch", "SRSTEPruner", "ShrinkingMethod", "SparseGPTPruner",
           "WandaPruner"]
