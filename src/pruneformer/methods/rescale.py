"""Least-squares rescaling of the units a structured cut keeps (Kwon et al. 2022's "mask tuning").

After a cut, every output Linear (attention output, FFN out) of a layer sees only its kept heads' or units'
slice of the input. One scale per kept head / unit, folded into the Linear's columns, can make the layer's
output match the dense model's again: with X the Linear's inputs on calibration tokens (``[tokens, in]``),
W its weight and Y the target, the scales s minimise ||X_k diag(s) W_k^T - Y||^2, whose normal equations are
((X_k^T X_k) * (W_k^T W_k)) s = rowsum((X_k^T Y) * W_k^T): a k x k solve from two statistics summed batch by
batch, with one scale shared by a head's dimensions.

Two ways to get X and Y:

* ``independent``: X the dense model's inputs and Y = X W^T, each Linear on its own (cheap, but blind to the
  error the cut layers below pass up).
* ``sequential`` (the paper's): layer by layer in forward order, X the inputs of the model *as cut and already
  rescaled below*, and Y the dense model's output there; where the family names its residual stream
  (:attr:`~pruneformer.families.base.Family.residual_inputs`) Y also takes in the residual's drift,
  Y = (dense Linear out + dense residual) - bias - cut model's residual, so each layer corrects what the layers
  below got wrong. Kwon et al. report this step as what keeps accuracy without retraining. As in their code,
  a sequence classifier's last FFN-out is fitted on the one token its head reads
  (:attr:`~pruneformer.families.base.Family.pooled_token`), where a few kept units can match it.

A ridge pulls s towards 1 (the cut as it is), so a scaled layer's error is never above the unscaled one and
badly determined scales stay near 1; a solve whose scales still leave [-10, 10] is dropped (kept at 1), as the
paper's code does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..core.targets import Target, layer_stack_path
from ..families.base import family_of

#: Scales beyond this are taken as a failed solve (the paper's bound) and the layer is left as cut.
SCALE_LIMIT = 10.0


@dataclass
class Statistics:
    """X^T X, X^T Y and ||Y||^2 of the real tokens of one output Linear (float64, on the CPU)."""

    xx: torch.Tensor
    xy: torch.Tensor
    yy: float = 0.0
    tokens: int = 0

    @classmethod
    def empty(cls, inputs: int, outputs: int) -> "Statistics":
        return cls(torch.zeros(inputs, inputs, dtype=torch.float64), torch.zeros(inputs, outputs, dtype=torch.float64))

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Rows of ``x`` (inputs) and ``y`` (targets), padding already removed."""
        x, y = x.double().cpu(), y.double().cpu()
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += float((y * y).sum())
        self.tokens += x.shape[0]


@dataclass
class Solved:
    """One output Linear's scales and its squared output error on the calibration tokens, before and after."""

    scale: torch.Tensor
    error_unscaled: float
    error_scaled: float
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"unscaled": self.error_unscaled, "scaled": self.error_scaled, "skipped": self.skipped, **self.extra}


def real_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[batch, seq, d]`` (or ``[batch, d]``) activations as ``[tokens, d]`` without padding."""
    if x.dim() == 3 and mask is not None and mask.shape == x.shape[:2]:
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


def solve_scales(stats: Statistics, weight: torch.Tensor, columns: torch.Tensor, width: int, ridge: float) -> Solved:
    """Scales of the kept ``columns`` (``width`` per head / unit) of ``weight`` ([out, in]) from ``stats``."""
    w = weight.detach().double().cpu()[:, columns]  # [out, k]
    gram = stats.xx[columns][:, columns] * (w.T @ w)
    rhs = (stats.xy[columns] * w.T).sum(1)
    groups = torch.arange(len(columns)) // width
    n = int(groups.max()) + 1
    pool = torch.zeros(n, len(columns), dtype=torch.float64)
    pool[groups, torch.arange(len(columns))] = 1.0
    gram, rhs = pool @ gram @ pool.T, pool @ rhs
    ones = torch.ones(n, dtype=torch.float64)
    damp = ridge * float(gram.diagonal().mean())
    scale = torch.linalg.solve(gram + damp * torch.eye(n, dtype=torch.float64), rhs + damp * ones)
    unscaled = float(ones @ gram @ ones - 2 * rhs @ ones) + stats.yy
    if not torch.isfinite(scale).all() or float(scale.abs().max()) > SCALE_LIMIT:
        return Solved(ones, unscaled, unscaled, skipped=True)
    return Solved(scale, unscaled, float(scale @ gram @ scale - 2 * rhs @ scale) + stats.yy)


def kept_columns(target: Target, units: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The input columns of an output Linear that ``units`` (its kept-head / kept-unit mask) keeps, and the
    columns per head / unit."""
    width = target.shape[1] // units.numel()
    return units.repeat_interleave(width).nonzero().flatten().cpu(), width


def residual_path(stack: str, layer: int, spot: tuple[str, int, str] | None) -> str | None:
    """The qualified name of the module whose call receives a layer's residual stream
    (:attr:`~pruneformer.families.base.Family.residual_inputs`), None where the family names none."""
    if spot is None:
        return None
    return f"{stack}.{layer}" + (f".{spot[0]}" if spot[0] else "")


def fit(target: Target, units: torch.Tensor, stats: Statistics, ridge: float) -> Solved | None:
    """Solve the kept columns' scales from ``stats`` and fold them into the target's weight; None when the
    target keeps nothing."""
    columns, width = kept_columns(target, units)
    if not len(columns):
        return None
    solved = solve_scales(stats, target.linear_weight, columns, width, ridge)
    apply_scales(target, columns, width, solved.scale.float())
    return solved


def apply_scales(target: Target, columns: torch.Tensor, width: int, scale: torch.Tensor) -> None:
    """Fold per-head / per-unit scales into the kept columns of the target's weight, in place."""
    weight = target.linear_weight
    groups = torch.arange(len(columns)) // width
    with torch.no_grad():
        weight[:, columns.to(weight.device)] *= scale[groups].to(weight.dtype).to(weight.device)


class _Stop(Exception):
    """Raised by a capture hook once it has what it came for: the rest of the forward is not needed."""


def _first_argument(args: tuple, kwargs: dict, index: int, name: str) -> torch.Tensor:
    return args[index] if len(args) > index else kwargs[name]


@torch.no_grad()
def capture(model: nn.Module, linear: nn.Module, residual: nn.Module | None, batch: dict[str, torch.Tensor],
            want_output: bool, residual_at: tuple[str, int, str] | None) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``batch`` up to ``linear``: its input (``x``), its output (``y``, when ``want_output``)
    and the residual stream it is added to (``r``, when ``residual`` is given); the forward stops there."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    if residual is not None and residual_at is not None:
        def on_residual(module, args, kwargs):
            seen["r"] = _first_argument(args, kwargs, residual_at[1], residual_at[2]).detach()
        handles.append(residual.register_forward_pre_hook(on_residual, with_kwargs=True))

    def on_input(module, args):
        seen["x"] = args[0].detach()
        if not want_output:
            raise _Stop

    def on_output(module, args, output):
        seen["y"] = output.detach()
        raise _Stop

    handles.append(linear.register_forward_pre_hook(on_input))
    handles.append(linear.register_forward_hook(on_output))
    try:
        model(**batch)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return seen


def rescale_sequentially(student: nn.Module, teacher: nn.Module, targets: Sequence[Target],
                         keep: dict[str, torch.Tensor], batches: Sequence[dict[str, torch.Tensor]],
                         ridge: float) -> dict[str, Solved]:
    """Rescale each output Linear of ``student`` (the cut model) in forward order against ``teacher`` (the dense
    model), on the cut model's own inputs; ``keep[target.name]`` is the kept-unit mask of each output target.

    Returns each target's :class:`Solved`; the student's weights are scaled in place."""
    family = family_of(student)
    residual_at = dict(family.residual_inputs)
    last = max((t.layer for t in targets), default=0)
    pooled = family.pooled_token if type(student).__name__.endswith("ForSequenceClassification") else None
    stack = layer_stack_path(student)
    teacher_modules, student_modules = dict(teacher.named_modules()), dict(student.named_modules())
    order = sorted((t for t in targets if t.name in keep), key=lambda t: (t.layer, t.role != "attn_out"))
    was = student.training, teacher.training
    student.eval(), teacher.eval()
    solved: dict[str, Solved] = {}
    try:
        for t in order:
            if not keep[t.name].any():
                continue
            spot = residual_at.get(t.role)
            path = residual_path(stack, t.layer, spot)
            bias = t.module.bias.detach() if getattr(t.module, "bias", None) is not None else None
            stats = Statistics.empty(t.shape[1], t.shape[0])
            on_pooled = pooled is not None and t.layer == last and t.role == "ffn_out"
            for batch in batches:
                mask = batch.get("attention_mask")
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                dense = capture(teacher, teacher_modules[t.name], teacher_modules.get(path) if path else None,
                                inputs, True, spot)
                cut = capture(student, student_modules[t.name], student_modules.get(path) if path else None,
                              inputs, False, spot)
                y = dense["y"] - (bias if bias is not None else 0.0)
                if "r" in dense and "r" in cut:  # the residual's drift: this layer makes up for the layers below
                    y = y + dense["r"] - cut["r"]
                if on_pooled:  # only this position reaches the classifier
                    stats.add(cut["x"][:, pooled], y[:, pooled])
                else:
                    stats.add(real_rows(cut["x"], mask), real_rows(y, mask))
            result = fit(t, keep[t.name], stats, ridge)
            result.extra = {"residual": bool(spot), "tokens": stats.tokens, "pooled_token": on_pooled}
            solved[t.name] = result
    finally:
        student.train(was[0]), teacher.train(was[1])
    return solved


def independent_statistics(stats: dict[str, Statistics], key: str, x: torch.Tensor, mask: torch.Tensor | None,
                           weight: torch.Tensor) -> None:
    """Add one batch of a dense Linear's inputs to its statistics for the ``independent`` rescaling (Y = X W^T)."""
    rows = real_rows(x.detach(), mask)
    if key not in stats:
        stats[key] = Statistics.empty(weight.shape[1], weight.shape[0])
    stats[key].add(rows, rows @ weight.detach().T)
