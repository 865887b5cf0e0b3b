"""Retraining-free structured pruning (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
Transformers"): Fisher importance of heads and FFN units on a few hundred labelled training examples, the same
share of each kept over all layers, then a least-squares rescaling of the kept units of every layer.

* **Importance.** A head's (FFN unit's) mask m multiplies its slice of the attention-output (FFN-out) Linear's
  input; dL/dm at m = 1 is the sum over tokens of input * input-gradient over that slice. The empirical
  Fisher, the sum over examples of (dL/dm)^2, estimates how much the loss rises when the unit goes.
* **Choice.** As the L1 baseline: the top ``target`` share of heads and of FFN units, over all layers, FFN
  counts aligned (:class:`~pruneformer.methods.l1_structured.L1StructuredPruner`'s finalize).
* **Rescaling.** Per layer and per output Linear, scales s of the kept units minimise
  ||X_kept diag(s) W_kept^T - X W^T||^2 on the calibration inputs X of the dense model (a head's dimensions
  share one scale): the normal equations are ((X_k^T X_k) * (W_k^T W_k)) s = rowsum((X_k^T X W^T) * W_k^T), a
  k x k solve from statistics accumulated batch by batch, with a ridge pulling s towards 1 (``calibration.dampening``
  times the mean diagonal). The scales are folded into the Linear's columns, so
  the cut model is an ordinary shrunk model.

With ``prune.epochs: 0`` the result is retraining-free (minutes on a CPU); any epochs retrain the shrunk model
as the L1 baseline does.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..core.structure import ShrinkSchedule
from .l1_structured import L1StructuredPruner


class FisherStructuredPruner(L1StructuredPruner):
    """Fisher-chosen heads and FFN units with least-squares rescaling (calibrated, retraining-free)."""

    name: ClassVar[str] = "fisher-structured"
    calibrated: ClassVar[bool] = True

    @staticmethod
    def shrink_schedule(recipe: Any) -> ShrinkSchedule:
        return ShrinkSchedule("one-shot", 0.0, retrain_epochs=recipe.prune.epochs)

    @classmethod
    def from_config(cls, recipe: Any, masks: Any = None, steps: int = 0) -> "FisherStructuredPruner":
        return cls(recipe.mlpruning.target, align=recipe.mlpruning.align, ridge=recipe.calibration.dampening)

    def __init__(self, target: float, align: int = 16, ridge: float = 0.01) -> None:
        super().__init__(target, align=align)
        self.ridge = float(ridge)
        self.stats: dict[str, dict[str, torch.Tensor]] = {}

    def calibrate(self, model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Fisher importance (replacing the L1 scores) and the rescaling statistics, from labelled batches."""
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
                        self._accumulate(key, x, valid, roles[role].module.weight.detach())
        finally:
            for handle in handles:
                handle.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        self.importance = fisher

    def _accumulate(self, key: str, x: torch.Tensor, valid: Any, weight: torch.Tensor) -> None:
        """X^T X and X^T (X W^T) of the real tokens, for the rescaling solve."""
        flat = (x * valid).reshape(-1, x.shape[-1]).double()  # padding rows zeroed: they add nothing
        s = self.stats.setdefault(key, {"xx": torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64),
                                        "xy": torch.zeros(x.shape[-1], weight.shape[0], dtype=torch.float64)})
        s["xx"] += (flat.T @ flat).cpu()
        s["xy"] += (flat.T @ (flat @ weight.double().T)).cpu()

    @torch.no_grad()
    def finalize(self) -> dict[str, torch.Tensor]:
        masks = super().finalize()  # the choice, on the Fisher importance; kept weights untouched, removed zeroed
        self.scales, self.objective = {}, {}
        for t in self.targets:
            if t.role not in ("attn_out", "ffn_out"):
                continue
            kind = "heads" if t.role == "attn_out" else "ffn_units"
            keep = self.final_masks[f"layer{t.layer}.{kind}"]
            width = t.shape[1] // keep.numel()
            columns = keep.repeat_interleave(width).nonzero().flatten()
            if not len(columns):
                continue
            s = self.stats[f"{t.layer}.{t.role}"]
            w = t.module.weight.detach().double().cpu()[:, columns]  # [out, k]
            gram = s["xx"][columns][:, columns] * (w.T @ w)
            rhs = (s["xy"][columns] * w.T).sum(1)
            groups = torch.arange(len(columns)) // width  # one scale per head / unit
            n = int(groups.max()) + 1
            pool = torch.zeros(n, len(columns), dtype=torch.float64)
            pool[groups, torch.arange(len(columns))] = 1.0
            gram, rhs = pool @ gram @ pool.T, pool @ rhs
            # ridge towards 1 (the cut as it is), not 0: f(s) + lambda ||s - 1||^2, so the scaled error is never
            # above the unscaled one and badly determined scales stay near 1
            ridge = self.ridge * float(gram.diagonal().mean())
            ones = torch.ones(n, dtype=torch.float64)
            scale = torch.linalg.solve(gram + ridge * torch.eye(n, dtype=torch.float64), rhs + ridge * ones)
            # the layer's squared output error on the calibration inputs, up to a constant: scaled vs as cut
            self.objective[t.name] = {"scaled": float(scale @ gram @ scale - 2 * rhs @ scale),
                                      "unscaled": float(ones @ gram @ ones - 2 * rhs @ ones)}
            self.scales[t.name] = scale.float()
            t.module.weight[:, columns.to(t.module.weight.device)] *= scale[groups].float().to(t.module.weight.device)
        return masks
