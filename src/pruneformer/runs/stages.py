"""The one skeleton every command's stages run on, and the one bundle of options every command takes.

A stage is done or it is not. Done: its files are loaded and its record is read back from the run state.
Not done: it runs, saves its files and is marked. That is the whole of ``--resume`` for every command
(``prune``'s dense reference and phases, the structured steps, the SPP search and each extraction, the
one-shot prune), so a command cannot forget a step of it, and a stage that runs again on resume is the
stage's own decision (:attr:`Stage.reuse`), not a branch in a flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    """How a run is driven, whatever the command: continue a run in the output directory (``resume``), show
    progress bars, where log lines go, per-step callbacks ``(step, loss)``, and whether pickle-based model
    files may be loaded (``--trust-pickle``)."""

    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    callbacks: Sequence[Callable[[int, float], None]] = ()
    trust_pickle: bool = False

    @classmethod
    def of(cls, options: "RunOptions | None" = None, **settings: Any) -> "RunOptions":
        """``options`` as given, or built from the same names as keywords (``run(recipe, resume=True)``);
        an unknown keyword is a TypeError naming it, as for any function."""
        if options is not None and settings:
            raise TypeError(f"pass either options or {', '.join(sorted(settings))}, not both")
        return options if options is not None else cls(**settings)


class StageRecords(Protocol):
    """Where stages are recorded (:class:`pruneformer.runs.engine.RunState`)."""

    def done(self, key: str) -> dict[str, Any] | None: ...

    def mark(self, key: str, value: dict[str, Any]) -> None: ...


def _always(record: dict[str, Any]) -> bool:
    return True


@dataclass
class Stage(Generic[T]):
    """One resumable step of a run.

    ``run()`` does the work and returns its result; ``save(result)`` writes the stage's files (rank 0; it is
    called on every rank, so it may wait for rank 0) and returns the record the run state keeps;
    ``load(record)`` rebuilds the result of a finished stage from its files and record. ``reuse(record)``
    says whether a finished record still holds (an extraction cut with other settings does not).
    """

    key: str
    run: Callable[[], T]
    save: Callable[[T], dict[str, Any]]
    load: Callable[[dict[str, Any]], T]
    reuse: Callable[[dict[str, Any]], bool] = _always


def run_stage(records: StageRecords, stage: Stage[T]) -> T:
    """The stage's result: loaded when it is done (and still holds), else run, saved and marked."""
    record = records.done(stage.key)
    if record is not None and stage.reuse(record):
        return stage.load(record)
    result = stage.run()
    records.mark(stage.key, stage.save(result))
    return result
