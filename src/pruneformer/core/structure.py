"""The structure that structured pruning keeps or cuts: the vocabulary shared by ``methods/`` and ``compress/``.

Methods decide what to keep, ``compress/`` cuts it; neither imports the other, both import this module
(as Torch-Pruning's ``Group`` sits between its importance and its pruning functions):

* :class:`LayerPlan`: what one layer keeps (heads, head dimensions, FFN units, output rows), the hand-over
  from a structured method (MLPruning, the L1 baseline) to :func:`compress.shrink_model`;
* :class:`PairedLayer` and :data:`GROUPS`: the paired inner dimensions of a layer, query-key (``qk``),
  value-output (``vo``) and FFN in-out (``ffn``), which SPP masks and :mod:`compress.paired` removes;
* :func:`check_compressible`: whether a model's family can be physically cut (``Family.cut``);
* :class:`ShrinkSchedule`: how a structured method spends its budget around the physical cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import ModelError, RecipeError
from ..families import Family, family_of
from .targets import Target

#: The paired inner dimensions of a transformer layer: query-key, value-output and FFN in-out.
GROUPS = ("qk", "vo", "ffn")
#: Per-head masks ([heads, head_dim]) or one vector per layer shared by all heads ([head_dim]).
Granularity = Literal["head", "shared"]
#: The six Linears of one layer that the paired groups span.
PAIRED_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class LayerPlan:
    """What one layer keeps; None keeps everything of that kind.

    ``heads``: kept head indices. ``qk_dims`` / ``v_dims``: kept indices inside a head's dimension, the
    same for every kept head. ``ffn_units``: kept intermediate units. ``attn_out_rows`` / ``ffn_out_rows``:
    kept output rows (hidden dimensions) of the attention-output and FFN-out Linear.
    """

    heads: list[int] | None = None
    qk_dims: list[int] | None = None
    v_dims: list[int] | None = None
    ffn_units: list[int] | None = None
    attn_out_rows: list[int] | None = None
    ffn_out_rows: list[int] | None = None


@dataclass(frozen=True)
class ShrinkSchedule:
    """How a structured method spends ``prune.epochs`` around the physical cut, so the structured run reads
    it from the method class instead of testing the method's name.

    ``step``: the name of step 1 (choose heads, units and rows; ``head-row`` trained, ``one-shot`` not).
    ``first_epochs``: step 1's training (0: one-shot). ``block_epochs`` > 0: a block step on the shrunk
    model (the class provides ``block_step``); else ``retrain_epochs`` of retraining the shrunk model.
    ``attention_distill``: step 1 distils attention probabilities too (needs eager attention).
    """

    step: str
    first_epochs: float
    block_epochs: float = 0.0
    retrain_epochs: float = 0.0
    attention_distill: bool = False


def check_compressible(model: nn.Module) -> Family:
    """The model's family, if it can be physically cut; a one-line :class:`ModelError` saying why not."""
    family = family_of(model)
    family.check_cut()
    if family.cut == "shrunk-bert" and not hasattr(model, "bert"):
        raise ModelError(f"Physical compression of {family.name} needs a task model with a .bert encoder "
                         f"({type(model).__name__} has none).", "load it with AutoModelForSequenceClassification")
    return family


@dataclass(frozen=True)
class PairedLayer:
    """The Linears of one transformer layer that SPP's pairs span, and its head layout.

    A paired unit belongs to a *key-value* head: with grouped-query attention (``kv_heads`` < ``num_heads``)
    the key and value rows of one KV head are read by ``groups`` query heads, so a query-key unit owns one key
    row and the matching row of every query head of its group, and a value-output unit one value row and the
    matching attention-output column of every query head of its group. In a ``rotary`` family a query-key unit
    is a rotated *pair* of dimensions (``i`` and ``i + head_dim / 2``, the ``rotate_half`` convention): a single
    rotated dimension mixes with its partner, so only whole pairs can be removed. ``ffn_gate`` (SwiGLU) is
    cut with ``ffn_in``, unit by unit.
    """

    index: int
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    num_heads: int
    kv_heads: int = 0  # 0: as many as num_heads
    rotary: bool = False
    ffn_gate: nn.Linear | None = None

    @property
    def key_heads(self) -> int:
        return self.kv_heads or self.num_heads

    @property
    def groups(self) -> int:
        """Query heads per key-value head."""
        return self.num_heads // self.key_heads

    @property
    def head_dim(self) -> int:
        return self.query.out_features // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.value.out_features // self.key_heads

    @property
    def qk_units(self) -> int:
        """Query-key units per head: dimensions, or rotated pairs of them."""
        return self.head_dim // 2 if self.rotary else self.head_dim

    @property
    def intermediate_size(self) -> int:
        return self.ffn_in.out_features

    def mask_shape(self, group: str, granularity: Granularity) -> tuple[int, ...]:
        if group == "ffn":
            return (self.intermediate_size,)
        dim = self.qk_units if group == "qk" else self.v_head_dim
        return (self.key_heads, dim) if granularity == "head" else (dim,)

    def per_row(self, group: str, mask: torch.Tensor) -> torch.Tensor:
        """A qk / vo mask (per head or shared, over units) as one value per row of the key-value heads'
        projections ([kv_heads * head_dim]); a rotated pair's value on both of its dimensions."""
        per_head = mask if mask.ndim == 2 else mask.unsqueeze(0).expand(self.key_heads, -1)
        if group == "qk" and self.rotary:
            per_head = torch.cat([per_head, per_head], -1)
        return per_head.reshape(-1)

    def qk_dims(self, keep: torch.Tensor) -> list[int]:
        """The kept dimensions inside a head of a shared qk keep-mask (both dimensions of each kept pair)."""
        units = keep.nonzero().flatten().tolist()
        return pair_dims(units, self.qk_units) if self.rotary else units

    def check_granularity(self, granularity: Granularity) -> None:
        """Per-head masks would give the heads of a rotary layer different kept pairs, hence different rotary
        frequencies at the same position of the shrunk head, which the family's attention cannot express."""
        if self.rotary and granularity == "head":
            raise RecipeError("SPP's per-head masks cannot be cut from a rotary model: each head would keep its own "
                              "rotary frequencies.", "use spp.granularity: shared")


def pair_dims(pairs: list[int], half: int) -> list[int]:
    """The dimensions of rotated pairs ``pairs`` inside a head of ``2 * half``: ``i`` and ``i + half`` each, sorted
    (so the kept first halves come first and ``rotate_half`` still pairs them)."""
    return sorted(list(pairs) + [d + half for d in pairs])


def num_heads_of(model: nn.Module) -> int:
    return family_of(model).num_heads(model.config)


def paired_layers(model: nn.Module, targets: list[Target]) -> list[PairedLayer]:
    """Group targets by layer; every layer needs all six roles (and a gated family its gate), since the pairs
    span them. A one-line :class:`ModelError` before any search where the family cannot be cut."""
    family = check_compressible(model)
    heads = num_heads_of(model)
    kv_heads = family.num_kv_heads(model.config)
    required = PAIRED_ROLES + (("ffn_gate",) if family.gated else ())
    by_layer: dict[int, dict[str, nn.Linear]] = {}
    for t in targets:
        by_layer.setdefault(t.layer, {})[t.role] = t.module
    layers = []
    for index in sorted(by_layer):
        roles = by_layer[index]
        missing = [r for r in required if r not in roles]
        if missing:
            raise RecipeError(f"SPP masks paired dimensions, but layer {index} has no {missing[0]} target.",
                              "do not --include/--exclude single roles with SPP")
        layers.append(PairedLayer(index, num_heads=heads, kv_heads=kv_heads, rotary=family.rotary,
                                  **{r: roles[r] for r in required}))
    return layers
