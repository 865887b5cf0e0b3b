"""MLPruning (arXiv 2105.14636): heads, rows and blocks with a learnable Top-k threshold.

Each group of prunable units has scores ``S`` (init 0) and one threshold ``t`` (init 10). Forward: keep ratio
``r = sigmoid(t)``, mask = the top ``ceil(r * |S|)`` scores. Backward (straight through, as the authors'
code does): ``S`` gets the mask's gradient, ``t`` gets ``sum(grad_mask * mask)``. The groups are

* ``level="head_row"``, per layer: one score per attention head (masks the head's Q, K, V rows and its
  attention-output columns), one per attention-output row, one per FFN unit (FFN-in rows and FFN-out
  columns) and one per FFN-out row;
* ``level="block"``: one score per ``b x b`` block of every Linear (of a shrunk model, MLPruning's step 3).

A target's mask is the product of its factors (row mask x column mask, or the block mask), so the fraction
of weights it keeps is the product of its groups' keep ratios. Summing those over the targets gives the
*analytic* remaining fraction ``R`` from the ``sigmoid(t)`` alone, and the adaptive regulariser pulls it
towards the target ``T``: ``penalty = max(0, R - T)^2`` with the constant coefficient
``max(20000 * penalty / (1 - T)^2, 50)``, which becomes 10 once the penalty is below 3e-4.

At ``finalize`` the kept counts of the FFN units and output rows are rounded to a multiple of ``align``
(default 16): matrix kernels run slower on odd widths (on a 2-core x86 CPU, 1.1x to 1.9x the time per
multiply-add: ``benchmarks/gemm_widths.py``), and a shrunk model that is no faster defeats the point.

Masks are applied with ``torch.nn.utils.parametrize`` (the weight *is* ``W * mask`` in every forward,
evaluation included); ``finalize`` bakes them into the weights and removes the parametrizations. Short runs
may end a hair above ``T`` (the penalty is small there), so ``finalize`` lowers every threshold by the same
amount, the least that brings the kept fraction to ``T`` or below: both methods then compare at the same
fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.structure import LayerPlan, ShrinkSchedule, check_compressible
from ..core.targets import Target
from ..errors import PatternError
from ..families import family_of
from .mlpruning_config import fit_threshold_budget
from .shrinking import ShrinkingMethod


class TopKMask(torch.autograd.Function):
    """Binary mask of the top ``ceil(sigmoid(t) * n)`` scores; straight-through gradients for S and t."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: torch.Tensor, align: int = 1) -> torch.Tensor:
        keep = keep_count(float(torch.sigmoid(threshold)), scores.numel(), align)
        mask = torch.zeros_like(scores)
        if keep:
            mask.view(-1)[scores.flatten().topk(keep, sorted=False).indices] = 1.0
        ctx.save_for_backward(mask)
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad, (grad * mask).sum().reshape(1), None


def keep_count(ratio: float, n: int, align: int = 1) -> int:
    """``ceil(ratio * n)``: at least 1 (sigmoid is never 0), at most n, robust to float noise (0.5 * 12 is 6).

    With ``align`` > 1 (and ``n`` a multiple of it) the count is rounded to the nearest multiple of ``align``,
    at least ``align``: still non-decreasing in ``ratio``, so a common threshold shift can meet a target.
    """
    return aligned_count(min(n, max(1, math.ceil(ratio * n - 1e-6))), n, align)


def aligned_count(count: int, n: int, align: int) -> int:
    """``count`` rounded to the nearest multiple of ``align`` (at least ``align``, at most ``n``) when ``n``
    is a multiple of ``align``; unchanged otherwise, and 0 stays 0."""
    if align > 1 and n % align == 0 and count:
        return min(n, align * max(1, round(count / align)))
    return count


@dataclass(frozen=True)
class Factor:
    """One factor of a target's mask: a group's mask laid along the rows, the columns or in blocks."""

    group: str
    axis: Literal["rows", "cols", "blocks"]
    repeat: int = 1  # rows/cols: each score covers ``repeat`` consecutive rows/cols; blocks: block size


class _MaskedWeight(nn.Module):
    """The parametrization ``W -> W * mask``; the mask comes from the method's current scores."""

    def __init__(self, method: "MLPruner", name: str) -> None:
        super().__init__()
        self._mask = lambda: method.target_mask(name)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self._mask()


def expand(mask: torch.Tensor, factor: Factor) -> torch.Tensor:
    """A group mask laid out over a weight matrix (broadcastable against it)."""
    if factor.axis == "blocks":
        return mask.repeat_interleave(factor.repeat, 0).repeat_interleave(factor.repeat, 1)
    full = mask.repeat_interleave(factor.repeat) if factor.repeat > 1 else mask
    return full[:, None] if factor.axis == "rows" else full[None, :]


def check_block_size(targets: list[Target], block_size: int) -> None:
    """Every non-empty target must tile into ``block_size`` x ``block_size`` blocks (one-line error if not)."""
    for target in targets:
        rows, cols = target.shape
        if rows * cols and (rows % block_size or cols % block_size):
            raise PatternError(
                f"Block size {block_size} does not divide layer {target.name} ({rows} x {cols}).",
                "choose a block size that divides the hidden size and the head width (e.g. 16 or 32)",
            )


class MLPruner(ShrinkingMethod):
    """Learnable Top-k thresholds at head + row level, or block level, towards a remaining fraction."""

    name: ClassVar[str] = "mlpruning"

    @staticmethod
    def check_model(model: nn.Module, recipe: Any) -> None:
        """Fail before any training when the model cannot be shrunk or ``mlpruning.block_size`` does not
        divide its widths (block step only); one-line errors."""
        check_compressible(model)
        m = recipe.mlpruning
        if m.block_keep < 1:
            config = model.config
            head_dim = config.hidden_size // config.num_attention_heads
            for size, what in ((config.hidden_size, "the hidden size"), (head_dim, "the head width"),
                               (config.intermediate_size, "the FFN width")):
                if size % m.block_size:
                    raise PatternError(f"Block size {m.block_size} does not divide {what} ({size}) of this model's "
                                       "layers.", "choose a block size that divides it, e.g. 16 or 32 (mlpruning.block_size)")

    @staticmethod
    def shrink_schedule(recipe: Any) -> ShrinkSchedule:
        """Head + row step, then a block step of the shrunk model (``mlpruning.block_keep`` < 1) or an
        optional fine-tune of it (``mlpruning.finetune_epochs``)."""
        m, budget = recipe.mlpruning, recipe.prune.epochs
        block = (m.block_epochs if m.block_epochs is not None else budget / 2) if m.block_keep < 1 else 0.0
        finetune = m.finetune_epochs if m.block_keep >= 1 else 0.0
        return ShrinkSchedule("head-row", budget - block - finetune, block, finetune, m.attention_weight > 0)

    @staticmethod
    def check_budget(recipe: Any, steps_per_epoch: int) -> str | None:
        """Fits ``mlpruning.score_lr`` to the budget when the recipe leaves it unset, then checks it."""
        return fit_threshold_budget(recipe.mlpruning, MLPruner.shrink_schedule(recipe).first_epochs, steps_per_epoch)

    @classmethod
    def from_config(cls, recipe: Any, masks: Any = None, steps: int = 0) -> "MLPruner":
        """The head + row step; it aims at ``target / block_keep`` so that the block step ends at ``target``."""
        m = recipe.mlpruning
        return cls(m.target / m.block_keep, level="head_row", block_size=m.block_size,
                   threshold_init=m.threshold_init, score_lr=m.score_lr, align=m.align)

    @classmethod
    def block_step(cls, recipe: Any, keep: float) -> "MLPruner":
        """The block step of the shrunk model, keeping ``keep`` of its weights."""
        m = recipe.mlpruning
        return cls(keep, level="block", block_size=m.block_size, threshold_init=m.threshold_init, score_lr=m.score_lr)

    def __init__(
        self,
        target: float,
        level: Literal["head_row", "block"] = "head_row",
        block_size: int = 32,
        threshold_init: float = 10.0,
        score_lr: float = 1e-2,
        log_every: int = 5,
        align: int = 16,
    ) -> None:
        if not 0 < target <= 1:
            raise ValueError("target must be in (0, 1]")
        if level not in ("head_row", "block"):
            raise ValueError("level must be 'head_row' or 'block'")
        if align < 1:
            raise ValueError("align must be at least 1")
        self.pattern = None  # structured: no per-weight pattern
        self.targets: list[Target] = []
        self.history: list[dict[str, Any]] = []
        self.target_fraction = float(target)
        self.level = level
        self.groups = 1  # query heads per key-value head (set by attach)
        self.block_size = int(block_size)
        self.threshold_init = float(threshold_init)
        self.score_lr = float(score_lr)
        self.log_every = int(log_every)
        self.align = int(align)
        self._aligned = False  # set by finalize: training moves one unit at a time, the end result is aligned
        self.scores: dict[str, nn.Parameter] = {}
        self.thresholds: dict[str, nn.Parameter] = {}
        self.factors: dict[str, list[Factor]] = {}
        self.final_masks: dict[str, torch.Tensor] = {}  # group -> bool mask, after finalize

    # -- structure -------------------------------------------------------------------------------
    def _add_group(self, key: str, shape: tuple[int, ...], device: torch.device) -> None:
        if key not in self.scores:
            self.scores[key] = nn.Parameter(torch.zeros(shape, device=device))
            self.thresholds[key] = nn.Parameter(torch.full((1,), self.threshold_init, device=device))

    def attach(self, model: nn.Module, targets: list[Target]) -> None:  # type: ignore[override]
        self.model = model
        self.targets = [t for t in targets if t.module.weight.numel()]
        if self.level == "block":
            check_block_size(self.targets, self.block_size)
        else:
            # heads are cut by key-value group (grouped-query attention: a KV head and the query heads
            # that read it go together); a gated FFN's gate rows go with its up rows
            family = family_of(model)
            heads = family.num_kv_heads(model.config)
            self.groups = family.num_heads(model.config) // heads
            query = next(t for t in self.targets if t.role == "query")
            head_dim = query.shape[0] // (heads * self.groups)
            roles_by_layer: dict[int, set[str]] = {}
            for t in self.targets:
                roles_by_layer.setdefault(t.layer, set()).add(t.role)
            missing = [l for l, roles in roles_by_layer.items() if roles != set(family.roles)]
            if missing:
                raise ValueError(f"head/row pruning needs all {len(family.roles)} Linears of layer {missing[0]}")
        for t in self.targets:
            device, (rows, cols) = t.module.weight.device, t.shape
            if self.level == "block":
                factors = [Factor(f"{t.name}.blocks", "blocks", self.block_size)]
                self._add_group(factors[0].group, (rows // self.block_size, cols // self.block_size), device)
            else:
                layer = f"layer{t.layer}"
                head = Factor(f"{layer}.heads", "rows", head_dim)
                query_heads = Factor(head.group, "rows", head_dim * self.groups)
                units = Factor(f"{layer}.ffn_units", "rows")
                factors = {
                    "query": [query_heads], "key": [head], "value": [head],
                    "attn_out": [Factor(f"{layer}.attn_out_rows", "rows"), Factor(head.group, "cols", head_dim * self.groups)],
                    "ffn_in": [units], "ffn_gate": [units],
                    "ffn_out": [Factor(f"{layer}.ffn_out_rows", "rows"), Factor(units.group, "cols")],
                }[t.role]
                sizes = {"query": heads, "attn_out": rows, "ffn_in": rows, "ffn_gate": rows, "ffn_out": rows}
                self._add_group(factors[0].group, (sizes.get(t.role, heads),), device)
            self.factors[t.name] = factors
            if not parametrize.is_parametrized(t.module, "weight"):
                parametrize.register_parametrization(t.module, "weight", _MaskedWeight(self, t.name))

    def group_align(self, group: str) -> int:
        """The multiple kept counts round to: FFN units and output rows, once finalizing (heads and blocks: 1)."""
        return self.align if self._aligned and group.endswith(("_units", "_rows")) else 1

    def group_mask(self, group: str) -> torch.Tensor:
        return TopKMask.apply(self.scores[group], self.thresholds[group], self.group_align(group))

    def target_mask(self, name: str) -> torch.Tensor:
        mask = None
        for factor in self.factors[name]:
            part = expand(self.group_mask(factor.group), factor)
            mask = part if mask is None else mask * part
        return mask

    def param_groups(self) -> list[dict[str, Any]]:
        """Scores and thresholds at their own learning rate, no weight decay.

        The thresholds take Adam without momentum (beta1 = 0): the regulariser's gradient is huge until the
        target is reached and zero below it, and with momentum the thresholds coast on for ~10 steps past
        the target (at lr 0.2 that is 2 logits: a 0.5 target ended at 0.37 in a first MiniLM run).
        """
        return [{"params": list(self.scores.values()), "lr": self.score_lr, "weight_decay": 0.0},
                {"params": list(self.thresholds.values()), "lr": self.score_lr, "weight_decay": 0.0,
                 "betas": (0.0, 0.9)}]

    # -- the remaining fraction ------------------------------------------------------------------
    def keep_ratios(self, discrete: bool = False) -> dict[str, torch.Tensor]:
        """sigmoid(t) per group (differentiable), or the exact kept share ceil(r n) / n."""
        ratios = {}
        for group, threshold in self.thresholds.items():
            r = torch.sigmoid(threshold[0])
            if discrete:
                n = self.scores[group].numel()
                r = torch.tensor(keep_count(float(r.detach()), n, self.group_align(group)) / n)
            ratios[group] = r
        return ratios

    def remaining_fraction(self, discrete: bool = False) -> torch.Tensor:
        """Fraction of the targets' weights kept, from the thresholds alone."""
        ratios = self.keep_ratios(discrete)
        kept, total = 0.0, 0
        for t in self.targets:
            numel = t.module.weight.numel()
            share = 1.0
            for factor in self.factors[t.name]:
                share = share * ratios[factor.group]
            kept, total = kept + share * numel, total + numel
        return kept / total

    def loss_term(self, step: int) -> torch.Tensor | None:
        if self.target_fraction >= 1:
            return None
        remaining = self.remaining_fraction()
        penalty = torch.relu(remaining - self.target_fraction) ** 2
        value = float(penalty.detach())
        coefficient = 10.0 if value < 3e-4 else max(20000 * value / (1 - self.target_fraction) ** 2, 50.0)
        if step % self.log_every == 0:
            self.history.append({"step": step, "remaining": float(remaining.detach()), "penalty": value,
                                 "coefficient": coefficient})
        return coefficient * penalty

    # -- the end ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _meet_target(self) -> float:
        """Lower all thresholds by the least common shift that puts the kept fraction at or under target."""
        if float(self.remaining_fraction(discrete=True)) <= self.target_fraction + 1e-9:
            return 0.0
        original = {k: v.detach().clone() for k, v in self.thresholds.items()}

        def fraction(shift: float) -> float:
            for k, v in self.thresholds.items():
                v.copy_(original[k] - shift)
            return float(self.remaining_fraction(discrete=True))

        low, high = 0.0, 1.0
        while fraction(high) > self.target_fraction and high < 1e3:
            low, high = high, high * 2
        for _ in range(50):
            mid = (low + high) / 2
            low, high = (mid, high) if fraction(mid) > self.target_fraction else (low, mid)
        fraction(high)
        return high

    def finalize(self) -> dict[str, torch.Tensor]:
        before = float(self.remaining_fraction(discrete=True))
        self._aligned = True
        shift = self._meet_target()
        with torch.no_grad():
            self.final_masks = {g: self.group_mask(g).bool() for g in self.scores}
            masks = {t.name: self.target_mask(t.name).bool().expand(t.shape).clone() for t in self.targets}
        for t in self.targets:
            if parametrize.is_parametrized(t.module, "weight"):
                parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=True)
        self.history.append({"final": True, "remaining_before_adjust": before, "threshold_shift": shift,
                             "remaining": float(self.remaining_fraction(discrete=True))})
        return masks

    def convergence_warning(self) -> str | None:
        final = next((h for h in reversed(self.history) if h.get("final")), None)
        if final and final["remaining_before_adjust"] > self.target_fraction + 0.05:
            return (f"MLPruning's thresholds kept {final['remaining_before_adjust']:.3f} of the weights at the end of "
                    f"training, above the target {self.target_fraction:.3f}; finalize lowered them all at once. "
                    "Give it more epochs or a larger mlpruning.score_lr.")
        return None

    def layer_plans(self, num_layers: int, round_to: int | None = None) -> list[LayerPlan]:
        """After a head/row ``finalize``: what each layer keeps, for :func:`compress.shrink_model`.

        With ``round_to`` the kept rows and units of each matrix are rounded up to a multiple of it (the
        next-best scores are added back, already zero) so block pruning can tile the shrunk matrices.
        """
        if self.level != "head_row" or not self.final_masks:
            raise RuntimeError("layer_plans needs a finalized head/row MLPruner")
        plans = []
        for layer in range(num_layers):
            def kept(kind: str, multiple: int | None) -> list[int] | None:
                return kept_indices(self.final_masks[f"layer{layer}.{kind}"], self.scores[f"layer{layer}.{kind}"], multiple)
            groups = kept("heads", None)
            heads = None if groups is None else [g * self.groups + j for g in groups for j in range(self.groups)]
            plans.append(LayerPlan(heads=heads, ffn_units=kept("ffn_units", round_to),
                                   attn_out_rows=kept("attn_out_rows", round_to),
                                   ffn_out_rows=kept("ffn_out_rows", round_to)))
        return plans

    def kept_summary(self) -> list[dict[str, int]]:
        """Per layer: kept heads, FFN units and output rows (head/row level, after finalize)."""
        layers = sorted({int(g.split(".")[0][5:]) for g in self.final_masks})
        return [{"layer": l, **{kind: int(self.final_masks[f"layer{l}.{kind}"].sum())
                                for kind in ("heads", "ffn_units", "attn_out_rows", "ffn_out_rows")}}
                for l in layers]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "scores": {k: v.detach().clone() for k, v in self.scores.items()},
                "thresholds": {k: v.detach().clone() for k, v in self.thresholds.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for store, saved in ((self.scores, state["scores"]), (self.thresholds, state["thresholds"])):
            for key, value in saved.items():
                store[key].copy_(value)  # in place: the optimizer holds these very tensors


def kept_indices(mask: torch.Tensor, scores: torch.Tensor, multiple: int | None) -> list[int] | None:
    """Sorted kept indices (None: all kept); with ``multiple``, padded with the next-best scores."""
    mask = mask.bool()
    count = int(mask.sum())
    if multiple:
        count = min(mask.numel(), -(-count // multiple) * multiple)
    if count == mask.numel():
        return None
    ranking = torch.where(mask, torch.inf, scores.detach().float())  # kept first, then best scores
    return sorted(ranking.topk(count).indices.tolist())
