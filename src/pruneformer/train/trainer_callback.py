"""Hugging Face ``Trainer`` integration: any pruneformer method inside ``transformers.Trainer``, unchanged.

``PruningCallback(method)`` drives the lifecycle of :mod:`pruneformer.methods.base` at the same points as
pruneformer's own loop (:func:`pruneformer.train.loop.train_phase`), so a run ends with the same masks:

=========================================  ====================================================
pruneformer's loop                          Trainer event
=========================================  ====================================================
``before_forward(step)``                    ``on_step_begin``
``loss + loss_term(step)`` before backward  a forward hook adds the term to ``outputs.loss``
``after_backward(step)``, then clipping     ``on_pre_optimizer_step`` (the callback clips, see below)
``before_optimizer_step(step)``             ``on_pre_optimizer_step``, after the clipping
``set_learning_rate(lr)``                   ``on_pre_optimizer_step``, the optimizer's current lr
``after_optimizer_step(step)``              ``on_optimizer_step``
``end_epoch(epoch)``                        ``on_epoch_end``
``finalize()``                              ``on_train_end`` (masks in ``callback.masks``)
=========================================  ====================================================

Two things the Trainer does differently are put right here rather than left to the user:

* **Clipping order.** The Trainer clips gradients *before* ``on_pre_optimizer_step``; pruneformer edits them
  first (masked gradients, SR-STE's decay), clips the edited gradients, and only then adds the terms clipping
  must not scale (ADMM's penalty, ``before_optimizer_step``). The callback sets
  ``args.max_grad_norm`` to 0 for the run and clips at the same norm itself, after the edit (restored at
  the end).
* **The method's own tensors** (MLPruning's scores and thresholds, SPP's masks with AdamW) join the
  Trainer's optimizer as extra parameter groups, scheduled like the others, and their gradients are cleared
  after each step (the Trainer's ``model.zero_grad()`` does not reach them).

The method's ``history`` (ADMM's residuals per Z/U update, MLPruning's remaining fraction, SPP's path size)
goes to the Trainer's logs, ``trainer.state.log_history``, keys prefixed ``pruning/``.

Not covered: fp16 with loss scaling (the gradients the method edits are scaled; use bf16 or fp32), and the
method's state in Trainer checkpoints (a resumed Trainer run restarts the method).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from ..core.targets import Target, resolve_targets
from ..errors import PruneformerError
from ..methods.base import PruningMethod


class PruningCallback(TrainerCallback):
    """Run ``method`` (ADMM, SR-STE, masked, MLPruning, SPP, ...) inside ``transformers.Trainer``.

    ``targets`` default to :func:`pruneformer.resolve_targets` of the Trainer's model; a method attached by
    the user before training is used as attached.
    """

    def __init__(self, method: PruningMethod, targets: list[Target] | None = None) -> None:
        self.method = method
        self.targets = targets
        self.masks: dict[str, torch.Tensor] | None = None
        self._step = 0
        self._logged = 0
        self._max_grad_norm = 0.0
        self._hook = None
        self._own: list[torch.Tensor] = []

    # -- start and end -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if getattr(args, "fp16", False):
            raise PruneformerError("PruningCallback cannot run with fp16 loss scaling: the method would edit "
                                   "scaled gradients.", "train in fp32 or with bf16=True")
        self._logged = len(self.method.history)  # what an earlier run logged; attaching may add the first record
        if getattr(self.method, "model", None) is None:
            self.method.attach(model, self.targets if self.targets is not None else resolve_targets(model))
        groups = self.method.param_groups()
        _add_groups(optimizer, lr_scheduler, groups)
        self._own = [p for group in groups for p in group["params"]]
        self._max_grad_norm, args.max_grad_norm = args.max_grad_norm or 0.0, 0.0  # clipped after the edit
        self._hook = model.register_forward_hook(self._add_loss_term)
        self._log(state)

    def on_train_end(self, args, state, control, **kwargs):
        args.max_grad_norm = self._max_grad_norm
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.masks = self.method.finalize()
        self._log(state)

    # -- every step ----------------------------------------------------------------------------------
    def on_step_begin(self, args, state, control, **kwargs):
        self._step = state.global_step  # optimizer steps done so far: pruneformer's 0-based step
        self.method.before_forward(self._step)

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.method.after_backward(self._step)
        if self._max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self._max_grad_norm)
        self.method.before_optimizer_step(self._step)
        if optimizer is not None:
            self.method.set_learning_rate(optimizer.param_groups[0]["lr"])

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.method.after_optimizer_step(self._step)

    def on_step_end(self, args, state, control, **kwargs):
        for param in self._own:
            param.grad = None
        self._log(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.method.end_epoch(max(0, math.ceil(round(state.epoch, 6)) - 1))

    # -- helpers -------------------------------------------------------------------------------------
    def _add_loss_term(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        """Forward hook: the method's extra loss joins the model's loss before backward, as in pruneformer's
        loop (SPP's coupling term, MLPruning's regulariser act through the gradient)."""
        if not module.training:
            return output
        extra = self.method.loss_term(self._step)
        if extra is None:
            return output
        if getattr(output, "loss", None) is None:
            raise PruneformerError(f"{type(self.method).__name__} adds a term to the loss, but the model computed "
                                   "no loss.", "pass labels to the model (no compute_loss_func), so the Trainer "
                                   "uses outputs.loss")
        output.loss = output.loss + extra
        return output

    def _log(self, state) -> None:
        """New entries of the method's history -> ``state.log_history`` (numbers only, ``pruning/`` keys)."""
        for record in self.method.history[self._logged:]:
            values = {f"pruning/{k}": v for k, v in record.items() if isinstance(v, (int, float, bool))}
            state.log_history.append({**values, "step": state.global_step})
        self._logged = len(self.method.history)


def _add_groups(optimizer, lr_scheduler, groups: list[dict[str, Any]]) -> None:
    """Add the method's parameter groups to the Trainer's optimizer, scheduled like the groups it has.

    A ``LambdaLR`` (every schedule ``transformers.get_scheduler`` makes) gets the new groups' base rates
    and its lambda, and their rate is set to where the schedule is now, exactly as if the groups had been
    there when it was built. Other schedulers cannot be extended: pass an optimizer that already holds
    ``method.param_groups()`` instead.
    """
    present = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [group for group in groups if not any(id(p) in present for p in group["params"])]
    if not missing:
        return
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps it
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise PruneformerError(f"The method has its own parameters, and the Trainer's scheduler "
                               f"({type(scheduler).__name__}) cannot take new ones.",
                               "build the optimizer with pruneformer.train.loop.make_optimizer(model, lr, weight_decay, "
                               "method.param_groups()) and pass Trainer(optimizers=(optimizer, scheduler))")
    for group in missing:
        optimizer.add_param_group(dict(group))
        added = optimizer.param_groups[-1]
        added["initial_lr"] = added["lr"]
        scheduler.base_lrs.append(added["lr"])
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        added["lr"] = added["initial_lr"] * scheduler.lr_lambdas[-1](scheduler.last_epoch)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
