"""Pruning methods, one file each, all on the lifecycle of :class:`PruningMethod`."""

from .admm import ADMMPruner
from .base import PruningMethod
from .magnitude import MagnitudePruner
from .masked import MaskedFineTuner
from .srste import SRSTEPruner

#: name -> class, for recipes and the CLI.
METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (MagnitudePruner, MaskedFineTuner, ADMMPruner, SRSTEPruner)
}

__all__ = ["ADMMPruner", "MagnitudePruner", "MaskedFineTuner", "METHODS", "PruningMethod", "SRSTEPruner"]
