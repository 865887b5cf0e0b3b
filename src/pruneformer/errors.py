"""User-facing errors.

Every mistake a user can make (a bad pattern string, a missing column, a model we cannot prune) is raised
as a :class:`PruneformerError` whose message is one line naming the problem *and* the fix. The CLI prints
that line and exits with status 2 instead of showing a traceback; library users can catch the class.
"""

from __future__ import annotations


class PruneformerError(Exception):
    """A problem with the user's input, explained in one line with the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}" if fix else problem)


class PatternError(PruneformerError, ValueError):
    """An unknown or impossible sparsity pattern, or one that does not fit a layer."""


class DataError(PruneformerError):
    """A data file, column or split that cannot be used."""


class ModelError(PruneformerError):
    """A model directory or architecture that pruneformer cannot load or target."""


class RecipeError(PruneformerError):
    """An invalid recipe or command-line option."""


class CheckpointError(PruneformerError):
    """A checkpoint or saved model that is missing, corrupt or from another run."""


class DivergenceError(PruneformerError):
    """Training produced a non-finite loss or a residual that keeps growing."""


def one_line(text: object) -> str:
    """Whitespace collapsed to single spaces, so a user-supplied name cannot break the one-line contract."""
    return " ".join(str(text).split())


def brief(text: object, limit: int = 240) -> str:
    """An exception or a tool's output as one short line, without its final full stop (callers add their own)."""
    line = one_line(text).rstrip(".!")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ExportError(PruneformerError):
    """An export that cannot be made or does not compute what the PyTorch model computes."""
