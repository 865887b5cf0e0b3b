"""Pattern strings: ``"2:4"``, ``"4x4:8"``, ``"50%"``, ``"0.5"``, ``"50%:global"`` -> a :class:`Pattern`."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ...errors import PatternError, one_line
from .base import Pattern
from .kinds import BlockPattern, NMPattern, UnstructuredPattern

#: Shown in every "unknown pattern" error so the user sees all accepted spellings at once.
ACCEPTED_FORMS = "write N:M (e.g. 2:4), RxC:K (e.g. 4x4:8) or a sparsity like 50% / 50%:global."


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_NM_RE = re.compile(r"^(\d+)\s*:\s*(\d+)$")
_BLOCK_RE = re.compile(r"^(\d+)\s*[x×*]\s*(\d+)\s*:\s*(\d+)$")
_PCT_RE = re.compile(rf"^({_NUM})\s*%$")
_FRAC_RE = re.compile(rf"^({_NUM})$")


def _parse_sparsity(text: str, original: str) -> float | None:
    """Parse ``"50%"`` or ``"0.5"`` to a fraction (exactly, via Decimal); None if it is not a number."""
    pct = _PCT_RE.match(text)
    frac = None if pct else _FRAC_RE.match(text)
    if not pct and not frac:
        return None
    try:
        value = Decimal((pct or frac).group(1))
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        return None
    if pct:
        value = value / 100
    elif value >= 1:
        raise PatternError(
            f"Sparsity '{one_line(original)}' is outside the range [0, 1) (a bare number is the fraction removed).",
            f"write a fraction like 0.5 or a percentage like {one_line(text)}%.",
        )
    if not (0 <= value < 1):
        raise PatternError(
            f"Sparsity '{one_line(original)}' is outside the range [0%, 100%) (the fraction of weights removed).",
            "use a value like 50% or 0.5 (0% keeps everything; 100% would delete the layer).",
        )
    return float(value)


def parse_pattern(text: str) -> Pattern:
    """Parse a user-facing pattern string into a :class:`Pattern`.

    Accepted: ``"N:M"`` (``"2:4"``), ``"RxC:K"`` (``"4x4:8"``), ``"50%"`` or a bare fraction ``"0.5"``
    (per-layer unstructured), and ``"50%:global"`` / ``"global:50%"`` (one threshold across all layers).
    Whitespace and case are ignored. Anything else raises :class:`PatternError` listing the accepted forms.
    """
    if isinstance(text, Pattern):
        return text
    if not isinstance(text, str):
        raise PatternError(f"Sparsity pattern must be a string, got {type(text).__name__}.", ACCEPTED_FORMS)
    raw = text
    s = " ".join(text.strip().lower().split())

    if m := _NM_RE.match(s):
        return NMPattern(int(m.group(1)), int(m.group(2)))
    if m := _BLOCK_RE.match(s):
        return BlockPattern(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    scope = "layer"
    body = s
    for prefix in ("global:", "global "):
        if body.startswith(prefix):
            scope, body = "global", body[len(prefix):].strip()
            break
    else:
        for suffix in (":global", " global"):
            if body.endswith(suffix):
                scope, body = "global", body[: -len(suffix)].strip()
                break
        else:
            if body.endswith(":layer"):
                body = body[: -len(":layer")].strip()
    fraction = _parse_sparsity(body, raw)
    if fraction is not None:
        return UnstructuredPattern(fraction, scope)
    raise PatternError(f"Unknown sparsity pattern '{one_line(raw)}'.", ACCEPTED_FORMS)
