"""The base of every recipe section, so a method can declare its own settings next to its code.

A method's section (``admm``, ``srste``, ``calibration``, ``mlpruning``, ``spp``, or a plugin's) is a
:class:`Settings` subclass registered with :func:`pruneformer.methods.registry.register_section`; the recipe,
``pruneformer prune``'s flags and ``pruneformer compare`` read it from there and never name a method.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from ..errors import PatternError
from .patterns import parse_pattern


class Settings(BaseModel):
    """A strict recipe section: unknown fields, inf, NaN and NUL characters are refused.

    ``flags`` maps ``pruneformer prune`` options (without the leading dashes) to this section's fields; the
    option's help is the field's description. :meth:`check_recipe` holds the checks that need the rest of
    the recipe; :meth:`fit_candidate` how ``pruneformer compare`` sets the section for one candidate.
    """

    # inf and NaN are never meaningful settings (an infinite epoch count would only fail deep in the run)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    flags: ClassVar[dict[str, str]] = {}

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """A NUL character is in no real path, column or pattern; the OS would reject it deep in the run."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("contains a NUL character")
        return value

    def check_recipe(self, recipe: Any) -> None:
        """Raise ValueError when this section cannot work with the rest of ``recipe`` (run when the recipe's
        method reads this section, before any work)."""

    @classmethod
    def fit_candidate(cls, section: dict[str, Any], budget: float, value: float | None) -> dict[str, Any]:
        """The section (as a dict) for one ``pruneformer compare`` candidate of a method that reads it:
        ``budget`` is the candidate's ``prune.epochs``, ``value`` its numeric setting (a shrinking method's
        fraction kept; None for a pattern). Default: unchanged."""
        return section


def _pattern_spec(value: str) -> str:
    try:
        return parse_pattern(value).spec
    except PatternError as exc:
        raise ValueError(str(exc)) from exc


def _layer_regexes(values: list[str]) -> list[str]:
    """Each entry is a role or a regex on layer names: check it compiles now, not after loading the model."""
    for value in values:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"'{value}' is not a role or a valid regular expression ({exc})") from None
    return values


#: a pattern spec, normalised ("2:4", "4x4:8", "70%"); a list of roles or layer-name regexes
PatternSpec = Annotated[str, AfterValidator(_pattern_spec)]
LayerRegexes = Annotated[list[str], AfterValidator(_layer_regexes)]
