"""One-shot magnitude pruning: keep the largest |w| of each pattern group, no training.

It is the cheapest baseline and the first step of the ASP recipe (see :mod:`.masked`).
"""

from __future__ import annotations

from typing import ClassVar

from .base import PruningMethod


class MagnitudePruner(PruningMethod):
    """Project every target onto the pattern by magnitude at attach time."""

    name: ClassVar[str] = "magnitude"
    trains: ClassVar[bool] = False

    def attach(self, model, targets) -> None:  # type: ignore[override]
        super().attach(model, targets)
        self.apply_masks(self.current_masks())
