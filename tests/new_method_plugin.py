"""A method added from outside the package, in one file: iterative hard thresholding (IHT), with its own
recipe section and ``pruneformer prune`` flag.

It is the whole recipe for a new ``prune.method`` with settings: a :class:`Settings` section (``iht``: how
many optimizer steps between projections, flag ``--iht-every``), a :class:`PruningMethod` whose
``from_config`` reads it, and one registration. No edit to the engine, the recipe module or the CLI: they
read the registry (the recipe gains ``iht``, ``prune --help`` gains ``--iht-every``): one file, one
:func:`register_method` call.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from pydantic import Field

from pruneformer.core.settings import Settings
from pruneformer.methods import PruningMethod
from pruneformer.methods.registry import MethodEntry, Phase, register_method, unregister_method, unregister_section


class IHTConfig(Settings):
    """IHT: project onto the pattern every ``every`` optimizer steps (and at the end)."""

    flags: ClassVar[dict[str, str]] = {"iht-every": "every"}
    every: int = Field(1, ge=1, description="optimizer steps between projections onto the pattern")


class IHTPruner(PruningMethod):
    """Train densely, and project the targets onto the pattern every ``every`` optimizer steps."""

    name: ClassVar[str] = "iht"

    def __init__(self, pattern, every: int = 1) -> None:
        super().__init__(pattern)
        self.every = every
        self.projections = 0

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None, steps: int = 0) -> "IHTPruner":
        return cls(recipe.prune.pattern, every=recipe.iht.every)

    def after_optimizer_step(self, step: int) -> None:
        if (step + 1) % self.every == 0:
            self.apply_masks(self.current_masks())
            self.projections += 1
            self.history.append({"step": step + 1, "projections": self.projections})


ENTRY = MethodEntry("iht", "iterative hard thresholding (a test plugin)", settings={"iht": IHTConfig},
                    sections=("iht",), phases=lambda recipe: [Phase("iht", recipe.prune.epochs, IHTPruner)])


def register() -> None:
    register_method(ENTRY, replace=True)  # the method and its section, with its flag


def unregister() -> None:
    unregister_method("iht")
    unregister_section("iht")
