"""Cut the paired inner dimensions (QK, VO, FFN) physically: keep-masks -> per-layer plans -> shrunk model.

A keep-mask per group comes from SPP's path record (:meth:`PathRecord.keep`) or from the L1 baseline
(:func:`l1_scores` + :func:`keep_top`), both global over layers per group. Removing a paired inner unit
is a rank reduction of W_q W_k^T, W_v W_o or W_1 W_2: every layer keeps its input and output size.

Exactness. A removed unit must contribute nothing, as a 0 in SPP's mask does, so :func:`zero_removed`
first zeroes what the mask multiplies: the query row (and bias) of a QK unit, the value row (and bias) of
a VO unit and the FFN-out column of an FFN unit. :func:`compress.slicing.shrink_model` then removes them
exactly (its bias folding adds only zeros). ``granularity="head"`` lets heads keep different dimensions;
slicing applies one index list to every head of a layer, so each head's dimensions are first permuted
(Q/K rows together, V rows with O columns: the products are unchanged) to put its kept ones first, and
the layer keeps the largest per-head count; the padding units are zero, so the result stays exact and
costs only their parameters (:func:`removed_parameters` counts what is really removed).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.structure import GROUPS, LayerPlan, PairedLayer, paired_layers
from ..core.targets import all_targets
from ..families import family_of
from .slicing import shrink_model


def layers_of(model: nn.Module) -> list[PairedLayer]:
    return paired_layers(model, all_targets(model))


@torch.no_grad()
def l1_scores(model: nn.Module, granularity: str = "shared") -> dict[str, torch.Tensor]:
    """L1-magnitude structured scores of every paired unit: the L1 norms of the weights it owns in both
    Linears of its pair (Q and K rows; V row and O column; FFN-in (and gate) row and FFN-out column); with
    grouped-query attention a unit owns the rows / columns of every query head of its group, in a rotary
    family both dimensions of its pair."""
    per: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
    for layer in layers_of(model):
        kv, groups, d = layer.key_heads, layer.groups, layer.head_dim
        qk = layer.query.weight.abs().sum(1).view(kv, groups, d).sum(1) + layer.key.weight.abs().sum(1).view(kv, d)
        if layer.rotary:
            qk = qk[:, : d // 2] + qk[:, d // 2:]
        vo = layer.value.weight.abs().sum(1).view(kv, -1) + layer.attn_out.weight.abs().sum(0).view(kv, groups, -1).sum(1)
        per["qk"].append(qk if granularity == "head" else qk.sum(0))
        per["vo"].append(vo if granularity == "head" else vo.sum(0))
        ffn = layer.ffn_in.weight.abs().sum(1) + layer.ffn_out.weight.abs().sum(0)
        per["ffn"].append(ffn + (layer.ffn_gate.weight.abs().sum(1) if layer.ffn_gate is not None else 0))
    return {g: torch.stack(v).cpu() for g, v in per.items()}


def _query_rows(layer: PairedLayer, per_kv_row: torch.Tensor) -> torch.Tensor:
    """A value per row of the key-value heads ([kv * dim]) repeated for every query head of each group."""
    return per_kv_row.view(layer.key_heads, 1, -1).expand(-1, layer.groups, -1).reshape(-1)


@torch.no_grad()
def zero_removed(model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """In place: make every removed unit contribute exactly nothing (what a 0 in SPP's mask does): the query
    rows of a qk unit (the key rows under grouped-query attention, read by the whole group; weights and bias,
    so a rotated pair is zero at every position), the value rows of a vo unit, the FFN-out column of a unit."""
    for i, layer in enumerate(layers_of(model)):
        drop_qk = ~layer.per_row("qk", keep["qk"][i]).to(layer.query.weight.device)
        drop_v = ~layer.per_row("vo", keep["vo"][i]).to(layer.value.weight.device)
        drop_f = ~keep["ffn"][i].to(layer.ffn_out.weight.device)
        for module, rows in ((layer.query if layer.groups == 1 else layer.key, drop_qk), (layer.value, drop_v)):
            module.weight[rows] = 0
            if module.bias is not None:
                module.bias[rows] = 0
        layer.ffn_out.weight[:, drop_f] = 0


@torch.no_grad()
def _permute_heads(layer: PairedLayer, keep_qk: torch.Tensor, keep_vo: torch.Tensor) -> tuple[int, int]:
    """Reorder each key-value head's dimensions (and its query heads' alike) so its kept ones come first;
    returns the layer's (qk, v) widths."""
    widths = []
    for keep, rows_of, query_rows_of, cols_of in ((keep_qk, (layer.key,), (layer.query,), ()),
                                                  (keep_vo, (layer.value,), (), (layer.attn_out,))):
        heads, dim = keep.shape
        perm = torch.cat([h * dim + torch.argsort((~keep[h]).to(torch.int8), stable=True) for h in range(heads)])
        perm = perm.to(layer.query.weight.device)
        # query head j of group h reads dims h*dim.. of the key-value rows: the same order inside its own rows
        query_perm = (_query_rows(layer, perm % dim)
                      + torch.arange(heads * layer.groups, device=perm.device).repeat_interleave(dim) * dim)
        for module, order in [(m, perm) for m in rows_of] + [(m, query_perm) for m in query_rows_of]:
            module.weight.copy_(module.weight[order])
            if module.bias is not None:
                module.bias.copy_(module.bias[order])
        for module in cols_of:
            module.weight.copy_(module.weight[:, query_perm])
        widths.append(int(keep.sum(1).max()))
    return widths[0], widths[1]


def plan_layers(model: nn.Module, keep: dict[str, torch.Tensor]) -> tuple[nn.Module, list[LayerPlan]]:
    """A copy of ``model`` with removed units zeroed (and heads permuted when masks are per head), and the
    per-layer plans that slice it."""
    work = copy.deepcopy(model)
    zero_removed(work, keep)
    plans = []
    for i, layer in enumerate(layers_of(work)):
        units = keep["ffn"][i].nonzero().flatten().tolist()
        if keep["qk"][i].ndim == 2:
            layer.check_granularity("head")
            qk, v = _permute_heads(layer, keep["qk"][i], keep["vo"][i])
            plans.append(LayerPlan(qk_dims=list(range(qk)), v_dims=list(range(v)), ffn_units=units))
        else:
            plans.append(LayerPlan(qk_dims=layer.qk_dims(keep["qk"][i]),
                                   v_dims=keep["vo"][i].nonzero().flatten().tolist(), ffn_units=units))
    return work, plans


def extract(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A physically smaller model that computes what ``model`` computes with the removed units masked."""
    work, plans = plan_layers(model, keep)
    return shrink_model(work, plans)


def _per_row_params(linear: nn.Linear) -> int:
    return linear.in_features + (linear.bias is not None)


def removed_parameters(model: nn.Module, keep: dict[str, torch.Tensor]) -> int:
    """Parameters the cut removes. Per removed query-key dimension: its key row and the query row of each
    head of its group (biases included); per value dimension: its value row and the attention-output column
    of each head of its group; per FFN unit: its FFN-in (and gate) row and FFN-out column. Per-head masks count
    their padded widths, and families cut by module swap one width per layer (the larger of qk and v), since
    that is what the cut keeps."""
    one_width = family_of(model).cut == "module-swap"
    total = 0
    for i, layer in enumerate(layers_of(model)):
        qk, vo = keep["qk"][i], keep["vo"][i]
        per_pair = 2 if layer.rotary else 1
        kept_qk = per_pair * (int(qk.sum(-1).max()) if qk.ndim == 2 else int(qk.sum()))
        kept_v = int(vo.sum(-1).max()) if vo.ndim == 2 else int(vo.sum())
        if one_width:
            kept_qk = kept_v = max(kept_qk, kept_v) + (max(kept_qk, kept_v) % 2 if layer.rotary else 0)
        heads, kv = layer.num_heads, layer.key_heads
        total += (layer.head_dim - kept_qk) * (heads * _per_row_params(layer.query) + kv * _per_row_params(layer.key))
        total += (layer.v_head_dim - kept_v) * (kv * _per_row_params(layer.value) + heads * layer.attn_out.out_features)
        ffn_rows = _per_row_params(layer.ffn_in) + (_per_row_params(layer.ffn_gate) if layer.ffn_gate is not None else 0)
        total += (layer.intermediate_size - int(keep["ffn"][i].sum())) * (ffn_rows + layer.ffn_out.out_features)
    return total
