"""The ``pruneformer`` command, thin over the Python API: ``prune``, ``oneshot``, ``spp-search``, ``spp-extract``
(:mod:`.training`), ``compare`` (:mod:`.compare`), ``eval``, ``export``, ``inspect`` (:mod:`.deploy`).

Every user mistake is a :class:`~pruneformer.errors.PruneformerError`; the CLI prints its one line and exits
with status 2 (:mod:`.app`). A new command is one module here that registers on :data:`app`.
"""

from __future__ import annotations

from . import training  # noqa: F401,I001  (registers prune, oneshot, spp-*: first in the help)
from . import compare  # noqa: F401,E402  (registers compare)
from . import deploy  # noqa: F401,E402  (registers eval, export, inspect)
from .app import app, recipe_overrides

__all__ = ["app", "main", "recipe_overrides"]


def main() -> None:  # pragma: no cover
    app()
