"""SPP (Solution Path Pruning, arXiv 2501.03289): one differential inclusion over paired-dimension masks.

Masks sit on the *inner* dimension of the three paired products of each layer, so a mask entry at zero
removes one rank of that product and keeps the layer's input and output sizes:

* ``qk``: query-key, one entry per head dimension, shared by Q and K (scales the query output: the score
  q^T diag(m) k needs the mask once; with grouped-query attention the key output, read by the whole group;
  in a rotary family one entry per rotated pair of dimensions);
* ``vo``: value-output, one entry per value dimension (scales the attention-output Linear's input, which
  equals scaling V's rows because attention mixes positions linearly per channel; with grouped-query
  attention the value output);
* ``ffn``: FFN in-out, one entry per hidden unit (scales FFN-out's input, after the activation).

``granularity="head"`` gives every head its own qk/vo vector ([heads, head_dim]); ``"shared"`` one vector
per layer shared by all heads ([head_dim]), which slices to exactly the parameter count a ratio implies.

The masks follow :class:`LinearizedBregman`; its coupling term enters through :meth:`loss_term` (the loop
adds it before ``backward()``). Weights are frozen during the search by default (the SPP code's setting);
``train_weights=True`` trains both. The masks step either by the plain DessiLBI update (``"sgd"``, the
method steps them itself after backward) or by AdamW in the loop's optimizer (``"adamw"``, through
:meth:`param_groups`; the SPP code's choice, lr 1e-3). The path (entry steps, z, gamma snapshots) stays the
method's state; :meth:`pruneformer.methods.spp.record.PathRecord.from_search` turns it into the saved record.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn

from ...core.structure import GROUPS, Granularity, PairedLayer, paired_layers
from ...core.targets import Target
from ...errors import RecipeError
from ..base import PruningMethod
from .lbi import LinearizedBregman


class UnitMasks:
    """Forward hooks that scale the paired inner dimensions by mask vectors (continuous or 0/1).

    ``masks`` maps ``"<group>.<layer index>"`` to a tensor of :meth:`PairedLayer.mask_shape`; the hooks
    read the dictionary at every forward, so the tensors may be replaced or trained in place.
    """

    def __init__(self, layers: list[PairedLayer], masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = masks
        self.handles = []
        for layer in layers:
            qk, vo, ffn = (f"{g}.{layer.index}" for g in GROUPS)
            if layer.groups == 1:  # one query per key head: scale the query output and the attention output's input
                self.handles += [
                    layer.query.register_forward_hook(
                        lambda m, i, out, k=qk, lay=layer: out * lay.per_row("qk", self.masks[k])),
                    layer.attn_out.register_forward_pre_hook(
                        lambda m, i, k=vo, lay=layer: (i[0] * lay.per_row("vo", self.masks[k]), *i[1:]))]
            else:  # grouped keys and values: scale the key-value heads' own outputs, which every query head reads
                self.handles += [
                    layer.key.register_forward_hook(
                        lambda m, i, out, k=qk, lay=layer: out * lay.per_row("qk", self.masks[k])),
                    layer.value.register_forward_hook(
                        lambda m, i, out, k=vo, lay=layer: out * lay.per_row("vo", self.masks[k]))]
            self.handles.append(layer.ffn_out.register_forward_pre_hook(
                lambda m, i, k=ffn: (i[0] * self.masks[k], *i[1:])))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class SPPSearch(PruningMethod):
    """The SPP search: trains mask vectors by the linearized Bregman iteration and records the path."""

    name: ClassVar[str] = "spp"

    def __init__(self, *, kappa: float = 1.0, nu: float = 100.0, lam: float = 1.0, alpha: float = 1.0,
                 granularity: Granularity = "shared", train_weights: bool = False,
                 mask_optimizer: Literal["sgd", "adamw"] = "sgd", mask_lr: float = 1e-3,
                 record_every: int = 1) -> None:
        if granularity not in ("head", "shared"):
            raise RecipeError(f"SPP granularity '{granularity}' is unknown.", "use 'head' or 'shared'")
        if mask_optimizer not in ("sgd", "adamw"):
            raise RecipeError(f"SPP mask optimizer '{mask_optimizer}' is unknown.", "use 'sgd' or 'adamw'")
        self.pattern = None  # SPP cuts by a ratio chosen after the search, not by a pattern
        self.targets = []
        self.history = []
        self.settings = dict(kappa=kappa, nu=nu, lam=lam, alpha=alpha)
        self.granularity: Granularity = granularity
        self.train_weights = train_weights
        self.mask_optimizer = mask_optimizer
        self.mask_lr = mask_lr
        self.record_every = max(1, int(record_every))
        self.snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def attach(self, model: nn.Module, targets: list[Target]) -> None:  # type: ignore[override]
        self.model = model
        self.targets = list(targets)
        self.layers = paired_layers(model, self.targets)
        self.layers[0].check_granularity(self.granularity)
        device = next(model.parameters()).device
        shapes = {f"{g}.{layer.index}": layer.mask_shape(g, self.granularity) for layer in self.layers for g in GROUPS}
        self.lbi = LinearizedBregman(shapes, device=device, **self.settings)
        self._frozen = []
        if not self.train_weights:
            self._frozen = [p for p in model.parameters() if p.requires_grad]
            for p in self._frozen:
                p.requires_grad_(False)
        self.hooks = UnitMasks(self.layers, self.lbi.a)
        self.snapshots = [(0, self._gamma_snapshot())]

    def param_groups(self) -> list[dict[str, Any]]:
        """The masks as an optimizer group of their own when AdamW steps them (no weight decay)."""
        if self.mask_optimizer != "adamw":
            return []
        return [{"params": self.lbi.parameters, "lr": self.mask_lr, "weight_decay": 0.0}]

    def loss_term(self, step: int) -> torch.Tensor:
        return self.lbi.coupling_loss()

    def after_backward(self, step: int) -> None:
        if self.mask_optimizer == "sgd":
            self.lbi.step_masks()

    def after_optimizer_step(self, step: int) -> None:
        entered = self.lbi.step_path()
        steps = self.lbi.steps
        if steps % self.record_every == 0:
            self.snapshots.append((steps, self._gamma_snapshot()))
        if entered or steps % 10 == 0:
            self.history.append({"step": steps, "entered": entered, "support": self.lbi.support_size(),
                                 "mean_mask": float(torch.cat([a.detach().flatten() for a in self.lbi.a.values()]).mean())})

    def finalize(self) -> dict[str, torch.Tensor]:
        """Remove the hooks, unfreeze the weights; returns the support of gamma (True = on the path)."""
        self.hooks.remove()
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        return {k: g != 0 for k, g in self.lbi.gamma.items()}

    def convergence_warning(self) -> str | None:
        total = sum(g.numel() for g in self.lbi.gamma.values())
        support = self.lbi.support_size()
        if support == 0:
            return ("SPP's path is empty: no unit entered (extraction then ranks units by z alone); "
                    "raise alpha or the search epochs, or lower lambda or nu")
        if support == total:
            return "every SPP unit entered the path: entry times cannot tell the last ones apart; lower alpha"
        return None

    def state_dict(self) -> dict[str, Any]:
        """The iteration's state and the gamma snapshots so far (one stacked tensor per mask), so a resumed
        search writes the same path record as an uninterrupted one."""
        keys = list(self.snapshots[0][1]) if self.snapshots else []
        return {**super().state_dict(), **self.lbi.state_dict(), "snapshot_steps": [s for s, _ in self.snapshots],
                "snapshot_gamma": {k: torch.stack([g[k] for _, g in self.snapshots]) for k in keys}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.lbi.load_state_dict(state)
        steps, gamma = state.get("snapshot_steps"), state.get("snapshot_gamma") or {}
        if steps and gamma:
            self.snapshots = [(int(step), {k: v[i].clone() for k, v in gamma.items()}) for i, step in enumerate(steps)]
        else:  # a checkpoint from before snapshots were saved: the path plot starts here
            self.snapshots = [(0, self._gamma_snapshot())]

    # -- the path --------------------------------------------------------------------------------
    def _gamma_snapshot(self) -> dict[str, torch.Tensor]:
        return {k: g.detach().to("cpu", torch.float16) for k, g in self.lbi.gamma.items()}

    def by_group(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-layer tensors keyed ``"<group>.<layer index>"`` (gamma, z, entry steps), stacked over the layers
        into one CPU tensor per group."""
        return {g: torch.stack([values[f"{g}.{layer.index}"].detach().cpu() for layer in self.layers]) for g in GROUPS}

    def search_settings(self) -> dict[str, Any]:
        """Every setting the path depends on."""
        return {**self.settings, "granularity": self.granularity, "train_weights": self.train_weights,
                "mask_optimizer": self.mask_optimizer, "mask_lr": self.mask_lr}
