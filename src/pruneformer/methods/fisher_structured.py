"""Retraining-free structured pruning (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
Transformers"): Fisher importance of heads and FFN units on a few hundred labelled training examples, the same
share of each kept over all layers, then a least-squares rescaling of the kept units of every layer.

* **Importance.** A head's (FFN unit's) mask m multiplies its slice of the attention-output (FFN-out) Linear's
  input; dL/dm at m = 1 is the sum over tokens of input * input-gradient over that slice. The empirical
  Fisher, the sum over examples of (dL/dm)^2, estimates how much the loss rises when the unit goes.
* **Choice** (``calibration.allocation``). ``search`` (the default; the paper's mask search, with weights in
  place of MACs): the split of the weight budget between heads and units whose kept heads and units hold the
  most Fisher importance, since both are in loss units; a head costs its query/key/value rows and output
  columns, a unit its FFN rows and column. ``share``: as the L1 baseline, the top ``target`` share of heads and
  of FFN units over all layers (:class:`~pruneformer.methods.l1_structured.L1StructuredPruner`'s finalize).
  Either way FFN counts are aligned.
* **Rescaling** (:mod:`~pruneformer.methods.rescale`, ``calibration.rescale``): one least-squares scale per kept
  head / unit of every attention-output and FFN-out Linear, folded into its columns, so the cut model is an
  ordinary shrunk model. ``sequential`` (the default, the paper's mask tuning) fits each layer in forward order
  on the cut model's own inputs against the dense model's output plus the residual's drift; ``independent``
  fits each Linear on the dense model's inputs alone (what this method did first: one seed of three lost 16
  points at half the weights); ``off`` keeps the Fisher choice unscaled.

With ``prune.epochs: 0`` the result is retraining-free (minutes on a CPU); any epochs retrain the shrunk model
as the L1 baseline does.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Sequence, get_args

import torch
from torch import nn

from ..core.structure import ShrinkSchedule
from ..errors import RecipeError
from .calibrated import CalibrationConfig
from .l1_structured import L1StructuredPruner
from .rescale import Solved, Statistics, fit, independent_statistics, rescale_sequentially

#: the recipe's choices (``calibration.rescale`` / ``allocation``), checked again for direct construction
RESCALE_MODES = get_args(CalibrationConfig.model_fields["rescale"].annotation)
ALLOCATIONS = get_args(CalibrationConfig.model_fields["allocation"].annotation)


class FisherStructuredPruner(L1StructuredPruner):
    """Fisher-chosen heads and FFN units with least-squares rescaling (calibrated, retraining-free)."""

    name: ClassVar[str] = "fisher-structured"
    calibrated: ClassVar[bool] = True

    @staticmethod
    def shrink_schedule(recipe: Any) -> ShrinkSchedule:
        return ShrinkSchedule("one-shot", 0.0, retrain_epochs=recipe.prune.epochs)

    @classmethod
    def from_config(cls, recipe: Any, masks: Any = None, steps: int = 0) -> "FisherStructuredPruner":
        c = recipe.calibration
        return cls(recipe.mlpruning.target, align=recipe.mlpruning.align, ridge=c.dampening, rescale=c.rescale,
                   allocation=c.allocation)

    def __init__(self, target: float, align: int = 16, ridge: float = 0.01, rescale: str = "sequential",
                 allocation: str = "search") -> None:
        super().__init__(target, align=align)
        if rescale not in RESCALE_MODES:
            raise RecipeError(f"Unknown rescaling '{rescale}'.", f"use one of: {', '.join(RESCALE_MODES)}")
        if allocation not in ALLOCATIONS:
            raise RecipeError(f"Unknown allocation '{allocation}'.", f"use one of: {', '.join(ALLOCATIONS)}")
        self.allocation = allocation
        self.ridge = float(ridge)
        self.rescale = rescale
        self.stats: dict[str, Statistics] = {}
        self._teacher: nn.Module | None = None
        self._batches: Sequence[dict[str, torch.Tensor]] = ()
        self.solved: dict[str, Solved] = {}

    def calibrate(self, model: nn.Module, batches: Sequence[dict[str, torch.Tensor]],
                  teacher: nn.Module | None = None) -> None:
        """Fisher importance (replacing the L1 scores), from labelled batches; and what the rescaling needs: the
        dense model's input statistics (``independent``), or a copy of the dense model and the batches
        (``sequential``, which runs after the cut): ``teacher`` when the caller holds one, else a copy."""
        if self.rescale == "sequential":
            self._batches = list(batches)
            self._teacher = teacher if teacher is not None else copy.deepcopy(model)
        outs: dict[int, dict[str, Any]] = {}
        for t in self.targets:
            if t.role in ("attn_out", "ffn_out"):
                outs.setdefault(t.layer, {})[t.role] = t
        grads: dict[str, torch.Tensor] = {}
        inputs: dict[str, torch.Tensor] = {}
        fisher = {f"layer{l}.{kind}": torch.zeros_like(self.importance[f"layer{l}.{kind}"])
                  for l in outs for kind in ("heads", "ffn_units")}

        def keep_input(key: str):
            def hook(module, args):
                x = args[0]
                if x.requires_grad:
                    x.register_hook(lambda g: grads.__setitem__(key, g.detach()))
                inputs[key] = x.detach()
            return hook

        handles = [t.module.register_forward_pre_hook(keep_input(f"{l}.{role}"))
                   for l, roles in outs.items() for role, t in roles.items()]
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                mask = batch.get("attention_mask")
                model.zero_grad(set_to_none=True)
                inputs.clear()
                with torch.enable_grad():  # the weights require grad, so every activation does
                    model(**batch).loss.backward()
                for l, roles in outs.items():
                    for role, kind in (("attn_out", "heads"), ("ffn_out", "ffn_units")):
                        key = f"{l}.{role}"
                        x, g = inputs[key], grads[key]
                        valid = mask.unsqueeze(-1).to(x.dtype) if mask is not None and x.dim() == 3 else 1.0
                        per_example = (x * g * valid).sum(1) if x.dim() == 3 else x * g  # [batch, in]
                        units = self.importance[f"layer{l}.{kind}"].numel()
                        per_unit = per_example.view(per_example.shape[0], units, -1).sum(-1)
                        fisher[f"layer{l}.{kind}"] += per_unit.pow(2).sum(0).cpu()
                        if self.rescale == "independent":
                            independent_statistics(self.stats, key, x, mask, roles[role].linear_weight)
        finally:
            for handle in handles:
                handle.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        self.importance = fisher

    def budgets(self) -> dict[str, int]:
        """``share``: the target share of heads and of units; ``search``: the split of the same weight budget
        that keeps the most Fisher importance (every head count tried, the units filling what is left)."""
        shares = super().budgets()
        if self.allocation == "share":
            return shares
        cost = {"heads": 0, "ffn_units": 0}
        for t in self.targets:
            cost["heads" if t.role in ("query", "key", "value", "attn_out") else "ffn_units"] += t.linear_weight.numel()
        score = {}
        for kind in cost:
            flat = torch.cat([v for k, v in self.importance.items() if k.endswith(kind)]).double()
            cost[kind] /= flat.numel()  # weights per head / unit (equal widths across layers)
            score[kind] = torch.cat([torch.zeros(1, dtype=torch.float64), flat.sort(descending=True).values.cumsum(0)])
        total = self.target_fraction * sum(cost[k] * (len(score[k]) - 1) for k in cost)
        best = (-1.0, shares)
        for heads in range(len(score["heads"])):
            units = math.floor((total - heads * cost["heads"]) / cost["ffn_units"] + 1e-9)
            if units < 0:
                break
            units = min(units, len(score["ffn_units"]) - 1)
            value = float(score["heads"][heads] + score["ffn_units"][units])
            if value > best[0]:
                best = (value, {"heads": heads, "ffn_units": units})
        return best[1]

    @torch.no_grad()
    def finalize(self) -> dict[str, torch.Tensor]:
        masks = super().finalize()  # the choice, on the Fisher importance; kept weights untouched, removed zeroed
        keep = {}
        for t in self.targets:
            if t.role in ("attn_out", "ffn_out"):
                keep[t.name] = self.final_masks[f"layer{t.layer}.{'heads' if t.role == 'attn_out' else 'ffn_units'}"]
        if self.rescale == "sequential" and self._teacher is not None:
            self.solved = rescale_sequentially(self.model, self._teacher, self.targets, keep, self._batches,
                                               self.ridge)
            self._teacher, self._batches = None, ()  # the copy is not kept past the cut
        elif self.rescale == "independent":
            for t in self.targets:
                stats = self.stats.get(f"{t.layer}.{t.role}")
                solved = fit(t, keep[t.name], stats, self.ridge) if t.name in keep and stats else None
                if solved is not None:
                    self.solved[t.name] = solved
        self.scales = {name: s.scale.float() for name, s in self.solved.items()}
        #: each output Linear's squared error on the calibration tokens, as cut ("unscaled") and rescaled
        self.objective = {name: s.record() for name, s in self.solved.items()}
        return masks
