"""A method added from outside the package, in one file: iterative hard thresholding (IHT).

It is the whole recipe for a new ``prune.method``: a :class:`PruningMethod` subclass (its ``from_config``
reads only ``prune.pattern`` here, the base class's default) and one :func:`register_method` call. No edit
to the engine, the recipe module or the CLI: they read the registry.
"""

from __future__ import annotations

from typing import ClassVar

from pruneformer.methods import PruningMethod
from pruneformer.methods.registry import MethodEntry, Phase, register_method


class IHTPruner(PruningMethod):
    """Train densely, and project the targets onto the pattern after every optimizer step."""

    name: ClassVar[str] = "iht"

    def after_optimizer_step(self, step: int) -> None:
        self.apply_masks(self.current_masks())


ENTRY = MethodEntry("iht", "iterative hard thresholding (a test plugin)",
                    phases=lambda recipe: [Phase("iht", recipe.prune.epochs, IHTPruner)])


def register() -> None:
    register_method(ENTRY, replace=True)
