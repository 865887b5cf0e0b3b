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
from .slicing import shrink_model


def layers_of(model: nn.Module) -> list[PairedLayer]:
    return paired_layers(model, all_targets(model))


@torch.no_grad()
def l1_scores(model: nn.Module, granularity: str = "shared") -> dict[str, torch.Tensor]:
    """L1-magnitude structured scores of every paired unit: the L1 norms of the weights it owns in both
    Linears of its pair (Q and K rows; V row and O column; FFN-in row and FFN-out column)."""
    per: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
    for layer in layers_of(model):
        h = layer.num_heads
        qk = (layer.query.weight.abs().sum(1) + layer.key.weight.abs().sum(1)).view(h, -1)
        vo = (layer.value.weight.abs().sum(1) + layer.attn_out.weight.abs().sum(0)).view(h, -1)
        per["qk"].append(qk if granularity == "head" else qk.sum(0))
        per["vo"].append(vo if granularity == "head" else vo.sum(0))
        per["ffn"].append(layer.ffn_in.weight.abs().sum(1) + layer.ffn_out.weight.abs().sum(0))
    return {g: torch.stack(v).cpu() for g, v in per.items()}


def _per_head(keep: torch.Tensor, heads: int) -> torch.Tensor:
    """[heads, dim] keep-mask from a per-head or shared one."""
    return keep if keep.ndim == 2 else keep.unsqueeze(0).expand(heads, -1)


@torch.no_grad()
def zero_removed(model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """In place: make every removed unit contribute exactly nothing (what a 0 in SPP's mask does)."""
    for i, layer in enumerate(layers_of(model)):
        drop_q = ~_per_head(keep["qk"][i], layer.num_heads).reshape(-1).to(layer.query.weight.device)
        drop_v = ~_per_head(keep["vo"][i], layer.num_heads).reshape(-1).to(layer.value.weight.device)
        drop_f = ~keep["ffn"][i].to(layer.ffn_out.weight.device)
        for module, rows in ((layer.query, drop_q), (layer.value, drop_v)):
            module.weight[rows] = 0
            if module.bias is not None:
                module.bias[rows] = 0
        layer.ffn_out.weight[:, drop_f] = 0


@torch.no_grad()
def _permute_heads(layer: PairedLayer, keep_qk: torch.Tensor, keep_vo: torch.Tensor) -> tuple[int, int]:
    """Reorder each head's dimensions so its kept ones come first; returns the layer's (qk, v) widths."""
    widths = []
    for keep, rows_of, cols_of in ((keep_qk, (layer.query, layer.key), ()), (keep_vo, (layer.value,), (layer.attn_out,))):
        heads, dim = keep.shape
        perm = torch.cat([h * dim + torch.argsort((~keep[h]).to(torch.int8), stable=True) for h in range(heads)])
        perm = perm.to(layer.query.weight.device)
        for module in rows_of:
            module.weight.copy_(module.weight[perm])
            if module.bias is not None:
                module.bias.copy_(module.bias[perm])
        for module in cols_of:
            module.weight.copy_(module.weight[:, perm])
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
            qk, v = _permute_heads(layer, keep["qk"][i], keep["vo"][i])
            plans.append(LayerPlan(qk_dims=list(range(qk)), v_dims=list(range(v)), ffn_units=units))
        else:
            plans.append(LayerPlan(qk_dims=keep["qk"][i].nonzero().flatten().tolist(),
                                   v_dims=keep["vo"][i].nonzero().flatten().tolist(), ffn_units=units))
    return work, plans


def extract(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A physically smaller model that computes what ``model`` computes with the removed units masked."""
    work, plans = plan_layers(model, keep)
    return shrink_model(work, plans)


def removed_parameters(model: nn.Module, keep: dict[str, torch.Tensor]) -> int:
    """Parameters the slicing removes: 2 (hidden + 1) per QK unit (Q and K rows with biases), 2 hidden + 1
    per VO unit (V row, bias, O column) and 2 hidden + 1 per FFN unit (FFN-in row, bias, FFN-out column).
    Per-head masks count their padded widths, since that is what the slicing keeps."""
    total = 0
    for i, layer in enumerate(layers_of(model)):
        hidden, heads = layer.query.in_features, layer.num_heads
        qk, vo = keep["qk"][i], keep["vo"][i]
        kept_qk = heads * (int(qk.sum(-1).max()) if qk.ndim == 2 else int(qk.sum()))
        kept_vo = heads * (int(vo.sum(-1).max()) if vo.ndim == 2 else int(vo.sum()))
        total += (layer.query.out_features - kept_qk) * 2 * (hidden + 1)
        total += (layer.value.out_features - kept_vo) * (2 * hidden + 1)
        total += (layer.intermediate_size - int(keep["ffn"][i].sum())) * (2 * hidden + 1)
    return total
