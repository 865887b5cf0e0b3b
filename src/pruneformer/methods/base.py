"""The one lifecycle every pruning method shares.

Shaped like torch.ao's sparsifiers and llm-compressor's modifiers so a user can drive any method from
their own training loop, and so pruneformer's own loop never needs to know which method it runs::

    method.attach(model, targets)
    for batch in data:
        method.before_forward(step)
        loss = model(**batch).loss
        extra = method.loss_term(step)          # None for most methods
        (loss + extra if extra is not None else loss).backward()
        method.after_backward(step)             # edit gradients (masking, SR-STE)
        clip_grad_norm_(model.parameters(), max_norm)   # optional
        method.before_optimizer_step(step)      # gradient terms that clipping must not scale (ADMM's penalty)
        method.set_learning_rate(optimizer.param_groups[0]["lr"])   # for steps that follow the lr (ADMM's pull)
        optimizer.step()
        method.after_optimizer_step(step)       # ADMM Z/U update, keep pruned weights at zero
    masks = method.finalize()                   # hard-prune: weights now satisfy the pattern

One-shot methods that need calibration data (Wanda, SparseGPT; ``calibrates = True``) add two hooks that
:func:`pruneformer.train.calibration.prune_layerwise` drives layer by layer::

    method.attach(model, targets)
    for each transformer layer:
        method.observe(target, inputs)          # every calibration batch, for each target of the layer
        method.prune_target(target)             # then each target of the layer is pruned
    masks = method.finalize()

Methods hold tensors only (masks, ADMM's Z and U); they never open files or own the optimizer. They see
every weight as ``[out_features, in_features]`` (:attr:`Target.linear_weight`), whatever the module stores.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import nn

from ..core.patterns import Pattern, compute_masks, parse_pattern
from ..core.targets import Target


class PruningMethod:
    """Base class: no-op hooks, the bookkeeping of targets, and mask application helpers."""

    name: ClassVar[str] = "base"
    #: False for one-shot methods: the training loop is skipped for them.
    trains: ClassVar[bool] = True
    #: True for one-shot methods that prune from calibration statistics (``observe`` / ``prune_target``).
    calibrates: ClassVar[bool] = False

    def __init__(self, pattern: Pattern | str) -> None:
        self.pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
        self.targets: list[Target] = []
        self.history: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, recipe: Any, masks: Mapping[str, torch.Tensor] | None = None, steps: int = 0) -> "PruningMethod":
        """Build the method from a validated recipe: its pattern (``prune.pattern``) and its own section.

        ``masks`` are the previous phase's (for methods that continue from them), ``steps`` the phase's
        length in optimizer steps. The run engine calls only this, so a method that needs more settings
        overrides it and reads its own recipe section; the engine never copies fields by hand.
        """
        return cls(recipe.prune.pattern)

    # -- lifecycle -------------------------------------------------------------------------------
    def attach(self, model: nn.Module, targets: list[Target]) -> None:
        """Bind to the model's target Linears; checks the pattern fits every one of them."""
        for target in targets:
            self.pattern.check_shape(target.shape, target.name)
        self.model = model
        self.targets = list(targets)

    def before_forward(self, step: int) -> None:
        """Called before each training forward pass."""

    def loss_term(self, step: int) -> torch.Tensor | None:
        """An extra loss to add to the task loss at this step (None: nothing)."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups of the method's own trainable tensors (SPP's masks); the loop adds
        them to its optimizer, so they share its LR schedule, checkpoints and resume."""
        return []

    def after_backward(self, step: int) -> None:
        """Called after ``loss.backward()``, before gradient clipping and the optimizer step."""

    def before_optimizer_step(self, step: int) -> None:
        """Called after gradient clipping, right before ``optimizer.step()``.

        Gradient terms of the method's own objective go here (ADMM's penalty gradient): added before
        clipping, a large penalty would scale the task gradient down with it.
        """

    def set_learning_rate(self, lr: float) -> None:
        """Told, right before each ``optimizer.step()``, the learning rate that step runs at: a method whose own
        step must keep pace with the optimizer's (ADMM's proximal pull with ``pull='lr'``) scales with it."""

    def after_optimizer_step(self, step: int) -> None:
        """Called after ``optimizer.step()``."""

    def adds_gradient_after_clipping(self) -> bool:
        """True when :meth:`before_optimizer_step` adds to the gradients: the loop then checks the targets'
        gradients are still finite before the optimizer step (clipping's norm no longer covers them)."""
        return False

    def eval_requested(self) -> bool:
        """True right after a step at which the method wants the dev score of :meth:`eval_weights` (e.g. ADMM
        after a Z/U update); the loop then evaluates and hands the scores to :meth:`record_eval`."""
        return False

    def record_eval(self, scores: Mapping[str, float]) -> None:
        """Receive the dev scores the loop computed for :meth:`eval_requested` or at an epoch's end."""

    def end_epoch(self, epoch: int) -> None:
        """Called at the end of every training epoch."""

    def observe(self, target: Target, inputs: torch.Tensor) -> None:
        """Calibration: accumulate statistics of one batch of ``target``'s inputs, ``[tokens, in_features]``."""

    def prune_target(self, target: Target) -> None:
        """Calibration: prune ``target`` from what :meth:`observe` saw (called once per target, layer by layer)."""

    def finalize(self) -> dict[str, torch.Tensor]:
        """Hard-prune the targets to the pattern and return their boolean masks by layer name."""
        masks = self.current_masks()
        self.apply_masks(masks)
        return masks

    def convergence_warning(self) -> str | None:
        """A sentence for the user when the method did not do what it should have (None: all fine)."""
        return None

    def divergence_hint(self) -> tuple[str, str] | None:
        """(likely cause, fix) when training went non-finite and this method's settings explain it, else None."""
        return None

    @contextlib.contextmanager
    def eval_weights(self) -> Iterator[None]:
        """Weights to evaluate with during training (default: the weights as they are)."""
        yield

    @contextlib.contextmanager
    def projected_weights(self) -> Iterator[None]:
        """Temporarily replace the targets by their projection onto the pattern, then restore them."""
        saved = [w.detach().clone() for w in self.weights]
        self.apply_masks(self.current_masks())
        try:
            yield
        finally:
            with torch.no_grad():
                for weight, original in zip(self.weights, saved):
                    weight.copy_(original)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this method exactly (tensors and plain values, nested freely).

        Multi-process training also uses this pair to keep ranks identical: rank 0's state goes through
        ``load_state_dict`` on every rank, so that must restore the state in full (parameters in place).
        """
        return {"history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = list(state.get("history", []))

    # -- helpers shared by the methods -------------------------------------------------------------
    @property
    def weights(self) -> list[torch.Tensor]:
        """The targets' weights as ``[out, in]`` (views of GPT-2's ``Conv1D`` weights; edits write through)."""
        return [t.linear_weight for t in self.targets]

    @property
    def grads(self) -> list[torch.Tensor | None]:
        """The gradients of :attr:`weights`, in the same ``[out, in]`` layout (None before backward)."""
        return [t.linear_grad for t in self.targets]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def current_masks(self) -> dict[str, torch.Tensor]:
        """Masks of the exact projection of the current weights onto the pattern."""
        with torch.no_grad():
            return compute_masks(self.pattern, {t.name: t.linear_weight for t in self.targets})

    @torch.no_grad()
    def apply_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        for target in self.targets:
            target.linear_weight.mul_(masks[target.name].to(target.module.weight.dtype))
