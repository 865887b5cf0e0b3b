"""What ``pruneformer compare`` compares: candidates named on the command line, each turned into a recipe.

A candidate is ``METHOD:SETTING``, read with the method registry (no method name is listed here):

* a method that prunes to a pattern (``admm:2:4``, ``srste:1:4``, ``magnitude-retrain:4x4:8``): the setting
  is the pattern;
* a method that shrinks (``mlpruning:0.5``, ``l1-structured:0.3``): the setting is the fraction of the
  encoder's Linear weights that remains (``mlpruning.target``);
* ``spp:0.3,0.5,0.7``: ratios of the paired inner dimensions removed, all cut from one SPP search;
* ``dense``: the dense model itself (always in the table as the reference).

Every candidate gets the same budget: ``prune.epochs`` epochs of pruning after the shared dense model; an SPP
search takes half of it and each cut's fine-tune the other half (:func:`pruneformer.compare.flow.candidate_recipe`).
Nothing here depends on a recipe, so the recipe's ``compare.candidates`` is checked with these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..core.patterns import parse_pattern
from ..errors import PruneformerError, RecipeError
from .registry import method_entry, method_names
from .spp.cut import check_ratio

#: the name of the solution-path candidates (one search, many cuts); not a ``prune`` method.
SPP = "spp"
CANDIDATE_FORMS = ("METHOD:PATTERN (admm:2:4, srste:1:4, magnitude-retrain:4x4:8), METHOD:FRACTION of the "
                   "encoder weights kept (mlpruning:0.5, l1-structured:0.3) or spp:RATIO[,RATIO...] of the "
                   "paired dimensions removed (spp:0.3,0.5)")


@dataclass(frozen=True)
class Candidate:
    """One model the compare trains per seed. ``kind``: ``pattern``, ``shrink``, ``spp`` or ``dense``."""

    method: str
    kind: str
    setting: str = ""
    value: float | None = None

    @property
    def label(self) -> str:
        return self.method if self.kind == "dense" else f"{self.method}:{self.setting}"

    @property
    def slug(self) -> str:
        """A directory name: the label with ':' and '%' spelled out."""
        return self.label.replace(":", "-").replace("%", "pct")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "method": self.method, "kind": self.kind, "setting": self.setting,
                "value": self.value}


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecipeError(f"Candidate '{spec}': '{text}' is not a number.", f"write it as {CANDIDATE_FORMS}") from None
    if not math.isfinite(value):
        raise RecipeError(f"Candidate '{spec}': '{text}' is not a finite number.", f"write it as {CANDIDATE_FORMS}")
    return value


def parse_candidate(spec: str) -> list[Candidate]:
    """The candidates one command-line word stands for (``spp:0.3,0.5`` stands for two)."""
    method, _, setting = spec.strip().partition(":")
    if method == SPP:
        if not setting:
            raise RecipeError(f"Candidate '{spec}' names no ratio.", "write spp:RATIO[,RATIO...], e.g. spp:0.3,0.5")
        ratios = []
        for part in setting.split(","):
            try:
                ratios.append(check_ratio(_number(part, spec)))
            except RecipeError as exc:
                raise RecipeError(f"Candidate '{spec}': {exc.problem}", exc.fix) from None
        return [Candidate(SPP, "spp", f"{r:g}", r) for r in ratios]
    if method not in method_names():
        raise RecipeError(f"Unknown candidate '{spec}' (method '{method}').",
                          f"use one of {', '.join(method_names())} or spp, as {CANDIDATE_FORMS}")
    entry = method_entry(method)
    if not entry.prunes:
        return [Candidate(method, "dense")]
    if not setting:
        raise RecipeError(f"Candidate '{spec}' names no pattern or fraction.", f"write it as {CANDIDATE_FORMS}")
    if entry.shrinks:
        fraction = _number(setting, spec)
        if not 0 < fraction <= 1:
            raise RecipeError(f"Candidate '{spec}': the fraction of encoder weights kept must lie in (0, 1].",
                              f"e.g. {method}:0.5")
        return [Candidate(method, "shrink", f"{fraction:g}", fraction)]
    try:
        pattern = parse_pattern(setting)
    except PruneformerError as exc:
        raise RecipeError(f"Candidate '{spec}': {exc.problem}", exc.fix) from None
    return [Candidate(method, "pattern", pattern.spec)]


def parse_candidates(specs: Sequence[str]) -> list[Candidate]:
    """Every candidate the words name, in order, each once; one-line errors for unknown or malformed ones."""
    found: list[Candidate] = []
    for spec in specs:
        for word in str(spec).split():
            for candidate in parse_candidate(word):
                if candidate not in found:
                    found.append(candidate)
    if not [c for c in found if c.kind != "dense"]:
        raise RecipeError("No pruning candidate given.", f"pass --candidates, each as {CANDIDATE_FORMS}")
    return found
