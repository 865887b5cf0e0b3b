"""The one registry of methods: a method name -> the stages it runs, so the recipe's allowed names, the
CLI's help, the run engine and the benchmarks all read one table and never list names again.

Each stage builds its method with the method's own ``from_config`` (which reads its recipe section), so
nothing here or in the engine copies recipe fields by hand. Adding a method is one file (the method) and
one :func:`register_method` call; see ``tests/new_method_plugin.py`` for a complete example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..core.settings import Settings
from ..errors import RecipeError
from . import (
    ADMMPruner,
    ALPSPruner,
    L1StructuredPruner,
    MagnitudePruner,
    MaskedFineTuner,
    MLPruner,
    PruningMethod,
    SparseGPTPruner,
    SRSTEPruner,
    WandaPruner,
)
from .admm_config import ADMMConfig
from .calibrated import CalibrationConfig
from .fisher_structured import FisherStructuredPruner
from .mlpruning_config import MLPruningConfig
from .shrinking import ShrinkingMethod
from .spp.settings import SPPConfig
from .srste import SRSTEConfig


@dataclass(frozen=True)
class Phase:
    """One stage of a method's schedule: which method class trains, for how many epochs, and whether the
    dense teacher distils into it (when ``distill.enabled``)."""

    name: str
    epochs: float
    method: type[PruningMethod] | None = None
    teacher: bool = True

    def build(self, recipe: Any, masks: Mapping[str, torch.Tensor] | None, steps: int = 0) -> PruningMethod:
        """The stage's method, built from the recipe by the method itself; ``steps`` is the stage's length."""
        if self.method is None:
            raise RecipeError(f"Stage '{self.name}' names no method class.", "register the stage with a method")
        return self.method.from_config(recipe, masks, steps)


@dataclass(frozen=True)
class MethodEntry:
    """What a ``prune.method`` name stands for.

    ``phases(recipe)`` lists the stages after the dense fine-tune (retraining schedules share
    ``prune.epochs`` and one lr schedule). ``prunes`` is False for ``dense`` alone; ``distills`` says whether
    ``distill.enabled`` applies; ``shrinks`` names the structured method class whose ``shrink_schedule``,
    ``from_config`` (and ``block_step``) the structured stages run (prune -> physical shrink -> block step or
    retrain); ``check(model, recipe)`` fails before any training when the model cannot be pruned this way.
    ``sections`` are the recipe sections the method reads (``pruneformer compare`` fits each to a candidate
    with :meth:`Settings.fit_candidate`); ``checks`` those whose :meth:`Settings.check_recipe` must hold;
    ``settings`` new sections the method brings, registered with it (a plugin's one registration).
    """

    name: str
    help: str
    phases: Callable[[Any], list[Phase]] = lambda recipe: []
    prunes: bool = True
    distills: bool = True
    shrinks: type[ShrinkingMethod] | None = None
    check: Callable[[nn.Module, Any], None] | None = None
    sections: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    settings: Mapping[str, type[Settings]] = field(default_factory=dict)


_METHODS: dict[str, MethodEntry] = {}
_SECTIONS: dict[str, type[Settings]] = {}
_SECTION_LISTENERS: list[Callable[[], None]] = []


def register_section(name: str, settings: type[Settings], replace: bool = False) -> type[Settings]:
    """Add a recipe section (``recipe.<name>``, a :class:`Settings` subclass) with its ``prune`` flags; the
    recipe validates it and ``pruneformer prune`` offers its flags from then on."""
    if not (isinstance(settings, type) and issubclass(settings, Settings)):
        raise TypeError(f"section '{name}' must be a pruneformer.core.settings.Settings subclass")
    if name in _SECTIONS and not replace:
        raise ValueError(f"recipe section '{name}' is already registered (pass replace=True to override it)")
    _SECTIONS[name] = settings
    for listener in _SECTION_LISTENERS:
        listener()
    return settings


def unregister_section(name: str) -> None:
    _SECTIONS.pop(name, None)
    for listener in _SECTION_LISTENERS:
        listener()


def sections() -> dict[str, type[Settings]]:
    """The registered method sections, by recipe key, in registration order."""
    return dict(_SECTIONS)


def on_sections_changed(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever a section is registered or removed (the CLI rebuilds its flags)."""
    _SECTION_LISTENERS.append(listener)


def register_method(entry: MethodEntry, replace: bool = False) -> MethodEntry:
    """Add a method name; the recipe accepts it and ``pruneformer prune`` runs it from then on."""
    if entry.name in _METHODS and not replace:
        raise ValueError(f"method '{entry.name}' is already registered (pass replace=True to override it)")
    for name, settings in entry.settings.items():
        register_section(name, settings, replace=replace or _SECTIONS.get(name) is settings)
    _METHODS[entry.name] = entry
    return entry


def unregister_method(name: str) -> None:
    """Remove a method name (tests that register a method clean up with this)."""
    _METHODS.pop(name, None)


def method_names() -> tuple[str, ...]:
    return tuple(_METHODS)


def method_entry(name: str) -> MethodEntry:
    if name not in _METHODS:
        raise RecipeError(f"Unknown method '{name}'.", f"use one of: {', '.join(_METHODS)}")
    return _METHODS[name]


def describe_methods() -> str:
    """``dense | magnitude | ...``, for help texts."""
    return " | ".join(_METHODS)


def _retrain(name: str, method: type[PruningMethod]) -> Callable[[Any], list[Phase]]:
    return lambda recipe: [Phase(name, recipe.prune.epochs, method)]


def _oneshot_then(name: str, method: type[PruningMethod]) -> Callable[[Any], list[Phase]]:
    """The calibrated one-shot prune (no training), then masked retraining for the whole budget."""
    return lambda recipe: [Phase(name, 0.0, method), Phase("masked", recipe.prune.epochs, MaskedFineTuner)]


def _admm_then(name: str, method: type[PruningMethod]) -> Callable[[Any], list[Phase]]:
    """ADMM for ``admm.phase_epochs`` of the budget, then ``method`` for the rest."""
    def phases(recipe: Any) -> list[Phase]:
        admm = recipe.admm.phase_epochs(recipe.prune.epochs)
        return [Phase("admm", admm, ADMMPruner, teacher=recipe.distill.during_admm),
                Phase(name, recipe.prune.epochs - admm, method)]
    return phases


for _name, _settings in (("admm", ADMMConfig), ("srste", SRSTEConfig), ("calibration", CalibrationConfig),
                         ("mlpruning", MLPruningConfig), ("spp", SPPConfig)):
    register_section(_name, _settings)

_ADMM = dict(sections=("admm",), checks=("admm",))
_CALIBRATED = dict(sections=("calibration",))
for _entry in (
    MethodEntry("dense", "no pruning (the dense fine-tune alone)", prunes=False, distills=False),
    MethodEntry("magnitude", "one-shot magnitude, no retraining", distills=False,
                phases=lambda recipe: [Phase("magnitude", 0.0, MagnitudePruner)]),
    MethodEntry("magnitude-retrain", "magnitude masks, then masked retraining", phases=_retrain("masked", MaskedFineTuner)),
    MethodEntry("srste", "SR-STE (sparse-refined straight-through estimator)", phases=_retrain("srste", SRSTEPruner),
                sections=("srste",)),
    MethodEntry("admm", "ADMM, then masked retraining", phases=_admm_then("masked", MaskedFineTuner), **_ADMM),
    MethodEntry("admm-srste", "ADMM, then SR-STE", phases=_admm_then("srste", SRSTEPruner),
                sections=("admm", "srste"), checks=("admm",)),
    MethodEntry("alps", "ALPS: layer-wise ADMM on each Linear's reconstruction (one-shot, calibrated)", distills=False,
                phases=lambda recipe: [Phase("alps", 0.0, ALPSPruner)], **_CALIBRATED),
    MethodEntry("sparsegpt", "SparseGPT one-shot (calibrated), no retraining", distills=False,
                phases=lambda recipe: [Phase("sparsegpt", 0.0, SparseGPTPruner)], **_CALIBRATED),
    MethodEntry("wanda", "Wanda one-shot (calibrated), no retraining", distills=False,
                phases=lambda recipe: [Phase("wanda", 0.0, WandaPruner)], **_CALIBRATED),
    MethodEntry("alps-retrain", "ALPS one-shot masks, then masked retraining", phases=_oneshot_then("alps", ALPSPruner),
                **_CALIBRATED),
    MethodEntry("sparsegpt-retrain", "SparseGPT one-shot masks, then masked retraining",
                phases=_oneshot_then("sparsegpt", SparseGPTPruner), **_CALIBRATED),
    MethodEntry("mlpruning", "MLPruning heads/rows (+ blocks), physically shrunk", shrinks=MLPruner,
                check=MLPruner.check_model, sections=("mlpruning",), checks=("mlpruning",)),
    MethodEntry("l1-structured", "L1 heads and FFN units, shrunk, retrained", shrinks=L1StructuredPruner,
                check=L1StructuredPruner.check_model, sections=("mlpruning",)),
    MethodEntry("fisher-structured", "Fisher heads and FFN units + least-squares rescaling (Kwon et al. 2022), "
                "retraining-free with --epochs 0", shrinks=FisherStructuredPruner,
                check=FisherStructuredPruner.check_model, sections=("mlpruning", "calibration")),
):
    register_method(_entry)

#: one-shot methods of ``pruneformer oneshot``: name -> builder(pattern, dampening).
_ONESHOT: dict[str, Callable[[Any, float], PruningMethod]] = {
    "magnitude": lambda pattern, dampening: MagnitudePruner(pattern),
    "wanda": lambda pattern, dampening: WandaPruner(pattern),
    "sparsegpt": lambda pattern, dampening: SparseGPTPruner(pattern, dampening=dampening),
    "alps": lambda pattern, dampening: ALPSPruner(pattern, dampening=dampening),
}


def oneshot_names() -> tuple[str, ...]:
    return tuple(_ONESHOT)


def oneshot_method(name: str, pattern: Any, dampening: float = 0.01) -> PruningMethod:
    if name not in _ONESHOT:
        raise RecipeError(f"Unknown one-shot method '{name}'.", f"use one of: {', '.join(_ONESHOT)}")
    return _ONESHOT[name](pattern, dampening)
