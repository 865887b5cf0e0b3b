"""A diverging run: stop at once, keep the last good checkpoint, and name the likely cause.

The training loop checks the global loss before backward and the global gradient norm before the optimizer
step, so it stops while the weights are still the last finite ones. It also refuses to write a checkpoint
whose weights or method state are not finite, so the newest checkpoint on disk is always a good one.
This module turns what the loop saw into one line the user can act on. It tries, in this order:
1. the method's own diagnosis (``PruningMethod.divergence_hint``; ADMM: rho far too large);
2. a non-finite value at the phase's first step: the starting weights or the inputs were already bad;
3. the loss curve: a loss that climbed before it blew up means the learning rate is too high.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import DivergenceError

#: A loss this many times its phase minimum, just before a non-finite value, counts as "climbing".
RISE_FACTOR = 3.0


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every floating-point tensor holds only finite numbers."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def likely_cause(lr: float, losses: Sequence[float], first_step: bool,
                 method_hint: tuple[str, str] | None) -> tuple[str, str]:
    """(cause, fix) for a run that just produced a non-finite value; ``losses`` are its finite losses so far."""
    if method_hint is not None:
        return method_hint
    if first_step:
        return ("the starting weights or the inputs already give non-finite values (a diverged or corrupt "
                "checkpoint, or a model saved with NaN weights)",
                "check the model and data with `pruneformer eval`, or start from another model")
    if losses and losses[-1] > RISE_FACTOR * min(losses):
        return (f"the learning rate ({lr:g}) is too high: the loss rose from {min(losses):.3g} to {losses[-1]:.3g} "
                "before it became non-finite",
                "lower the learning rate of this phase (e.g. by 10x)")
    return (f"the learning rate ({lr:g}) is likely too high for this model and method: one update jumped from a "
            f"loss of {losses[-1]:.3g} to non-finite values" if losses else f"the learning rate ({lr:g}) is likely too high",
            "lower the learning rate of this phase (e.g. by 10x)")


def divergence_error(what: str, step: int, phase: str, cause: tuple[str, str],
                     checkpoint_dir: Path | None, last_good_step: int | None) -> DivergenceError:
    """The one-line error for a divergence at ``step`` (1-based) of ``phase``."""
    reason, fix = cause
    if checkpoint_dir is not None and last_good_step is not None:
        kept = f" The last good checkpoint is kept: {checkpoint_dir} (step {last_good_step})."
        again = (f"; then run again with --resume: it continues from that checkpoint with the settings it was saved "
                 f"with, so to apply new settings delete {checkpoint_dir} first (finished phases are kept)")
    else:
        kept = " No checkpoint of this phase was written yet; the finished phases before it are kept."
        again = "; then run again with --resume (finished phases are kept)"
    return DivergenceError(f"Training diverged at step {step} of phase '{phase}': {what}. Likely cause: {reason}.{kept}",
                           fix + again)
