"""SPP (Solution Path Pruning, arXiv 2501.03289): one differential inclusion over paired-dimension masks.

Masks sit on the *inner* dimension of the three paired products of each layer, so a mask entry at zero
removes one rank of that product and keeps the layer's input and output sizes:

* ``qk``: query-key, one entry per head dimension, shared by Q and K (scales the query output: the score
  q^T diag(m) k needs the mask once);
* ``vo``: value-output, one entry per value dimension (scales the attention-output Linear's input, which
  equals scaling V's rows because attention mixes positions linearly per channel);
* ``ffn``: FFN in-out, one entry per hidden unit (scales FFN-out's input, after the activation).

``granularity="head"`` gives every head its own qk/vo vector ([heads, head_dim]); ``"shared"`` one vector
per layer shared by all heads ([head_dim]), which slices to exactly the parameter count a ratio implies.

The masks follow :class:`LinearizedBregman`; its coupling term enters through :meth:`loss_term` (the loop
adds it before ``backward()``). Weights are frozen during the search by default (the SPP code's setting);
``train_weights=True`` trains both. The masks step either by the plain DessiLBI update (``"sgd"``, the
method steps them itself after backward) or by AdamW in the loop's optimizer (``"adamw"``, through
:meth:`param_groups`; the SPP code's choice, lr 1e-3). :meth:`path_record` returns what extraction needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn

from ..errors import RecipeError
from ..targets import Target
from .base import PruningMethod
from .lbi import LinearizedBregman

GROUPS = ("qk", "vo", "ffn")
Granularity = Literal["head", "shared"]


@dataclass(frozen=True)
class PairedLayer:
    """The six Linears of one transformer layer and its head layout."""

    index: int
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    num_heads: int

    @property
    def head_dim(self) -> int:
        return self.query.out_features // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.value.out_features // self.num_heads

    @property
    def intermediate_size(self) -> int:
        return self.ffn_in.out_features

    def mask_shape(self, group: str, granularity: Granularity) -> tuple[int, ...]:
        if group == "ffn":
            return (self.intermediate_size,)
        dim = self.head_dim if group == "qk" else self.v_head_dim
        return (self.num_heads, dim) if granularity == "head" else (dim,)


def num_heads_of(model: nn.Module) -> int:
    config = model.config
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    if not heads:
        raise RecipeError(f"{type(model).__name__} has no head count in its config.", "use a BERT-family model")
    return int(heads)


def paired_layers(model: nn.Module, targets: list[Target]) -> list[PairedLayer]:
    """Group targets by layer; every layer needs all six roles, since the pairs span them."""
    heads = num_heads_of(model)
    by_layer: dict[int, dict[str, nn.Linear]] = {}
    for t in targets:
        by_layer.setdefault(t.layer, {})[t.role] = t.module
    layers = []
    for index in sorted(by_layer):
        roles = by_layer[index]
        missing = [r for r in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out") if r not in roles]
        if missing:
            raise RecipeError(f"SPP masks paired dimensions, but layer {index} has no {missing[0]} target.",
                              "do not --include/--exclude single roles with SPP")
        layers.append(PairedLayer(index, num_heads=heads, **roles))
    return layers


class UnitMasks:
    """Forward hooks that scale the paired inner dimensions by mask vectors (continuous or 0/1).

    ``masks`` maps ``"<group>.<layer index>"`` to a tensor of :meth:`PairedLayer.mask_shape`; the hooks
    read the dictionary at every forward, so the tensors may be replaced or trained in place.
    """

    def __init__(self, layers: list[PairedLayer], masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = masks
        self.handles = []
        for layer in layers:
            heads = layer.num_heads
            self.handles += [
                layer.query.register_forward_hook(
                    lambda m, i, out, k=f"qk.{layer.index}", h=heads: out * self._flat(k, h)),
                layer.attn_out.register_forward_pre_hook(
                    lambda m, i, k=f"vo.{layer.index}", h=heads: (i[0] * self._flat(k, h), *i[1:])),
                layer.ffn_out.register_forward_pre_hook(
                    lambda m, i, k=f"ffn.{layer.index}": (i[0] * self.masks[k], *i[1:])),
            ]

    def _flat(self, key: str, heads: int) -> torch.Tensor:
        mask = self.masks[key]
        return mask.reshape(-1) if mask.ndim == 2 else mask.repeat(heads)

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
        return {**super().state_dict(), **self.lbi.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.lbi.load_state_dict(state)
        self.snapshots = [(0, self._gamma_snapshot())]  # earlier snapshots are not checkpointed

    # -- the path --------------------------------------------------------------------------------
    def _gamma_snapshot(self) -> dict[str, torch.Tensor]:
        return {k: g.detach().to("cpu", torch.float16) for k, g in self.lbi.gamma.items()}

    def path_record(self, fingerprint: str) -> "PathRecord":
        """Entry times (and z as the tie-break of units that did not enter) for every unit, by group."""
        from ..path_record import PathRecord

        def stack(source: Mapping[str, torch.Tensor], group: str) -> torch.Tensor:
            return torch.stack([source[f"{group}.{layer.index}"].detach().cpu() for layer in self.layers])

        return PathRecord(
            granularity=self.granularity, layers=[layer.index for layer in self.layers],
            num_heads=self.layers[0].num_heads,
            entry={g: stack(self.lbi.entry, g) for g in GROUPS},
            score={g: stack(self.lbi.z, g).float() for g in GROUPS},
            path_steps=[s for s, _ in self.snapshots],
            gamma_path={g: torch.stack([stack(snap, g) for _, snap in self.snapshots]) for g in GROUPS},
            fingerprint=fingerprint, steps=self.lbi.steps,
            settings={**self.settings, "granularity": self.granularity, "train_weights": self.train_weights,
                      "mask_optimizer": self.mask_optimizer, "mask_lr": self.mask_lr},
        )
