"""Physically cut a model of any ``module-swap`` family (RoBERTa, ELECTRA, DistilBERT, Llama, Qwen2, ViT,
DINOv2...): its own transformers classes with smaller Linears (:mod:`.modeling_shrunk`).

Exactness is as in :mod:`.slicing` (constants of removed units folded into the next bias; a bias is added
where the family's output Linear has none and the fold is non-zero, e.g. Qwen2's value bias). What differs by
family comes from :class:`~pruneformer.families.Family`:

* grouped-query attention: heads are cut by key-value group; a plan's heads must be whole groups;
* one head width per layer (the family's forward splits heads with ``view(..., -1, head_size)``): when query-key
  and value keep different widths, the narrower is padded with removed dimensions, which are zero (exact;
  the padding costs parameters only);
* rotary families keep whole rotated pairs of query-key dimensions (``i`` with ``i + head_dim / 2``; a cut
  of single rotated dimensions is refused); a layer that keeps fewer pairs reads only their columns of the
  shared cos / sin table (``rotary`` edits, :mod:`.modeling_shrunk`);
* a gated FFN cuts its gate rows with its up rows.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..core.structure import LayerPlan, pair_dims
from ..core.targets import layer_stack, layer_stack_path
from ..families import Family, family_of
from .modeling_shrunk import ShrunkConfig, ShrunkModel

#: transformers auto classes by the task model's class-name suffix.
TASKS = {"ForSequenceClassification": "AutoModelForSequenceClassification",
         "ForImageClassification": "AutoModelForImageClassification",
         "ForCausalLM": "AutoModelForCausalLM", "Model": "AutoModel"}


def task_of(model: nn.Module) -> str:
    name = type(model).__name__
    for suffix, auto in TASKS.items():
        if name.endswith(suffix):
            return auto
    raise ValueError(f"{name}: no transformers auto class for this task model")


def checked_indices(indices: list[int] | None, size: int, what: str) -> list[int]:
    if indices is None:
        return list(range(size))
    kept = sorted(int(i) for i in indices)
    if len(set(kept)) != len(kept) or (kept and (kept[0] < 0 or kept[-1] >= size)):
        raise ValueError(f"{what}: indices must be distinct and in [0, {size}), got {kept}")
    return kept


def _pad(kept: list[int], width: int, size: int) -> list[int]:
    """``kept`` plus the first removed dimensions, up to ``width`` (removed dimensions are zero)."""
    taken = set(kept)
    extra = [d for d in range(size) if d not in taken][: width - len(kept)]
    return sorted(kept + extra)


def _pad_pairs(kept: list[int], width: int, size: int, layer: int, family: str) -> list[int]:
    """Rotated query-key dimensions: ``kept`` must hold whole pairs (``i`` and ``i + size / 2``); padded with
    the first removed pairs up to ``width`` (rounded up to even)."""
    half = size // 2
    pairs = [d for d in kept if d < half]
    if pair_dims(pairs, half) != kept:
        raise ValueError(f"layer {layer}: {family} rotates query-key dimensions in pairs (i with i + {half}); "
                         f"a cut keeps whole pairs or whole heads, got {kept}")
    return pair_dims(_pad(pairs, (width + 1) // 2, half), half)


def head_rows(heads: list[int], dims: list[int], head_dim: int) -> torch.Tensor:
    """Row indices of dimensions ``dims`` inside each of ``heads`` (heads of ``head_dim`` rows each)."""
    return torch.tensor([h * head_dim + d for h in heads for d in dims], dtype=torch.long)


def _drop(state: dict[str, torch.Tensor], prefix: str) -> None:
    """Remove every entry of ``state`` under module path ``prefix`` (the cut writes its own)."""
    for key in [k for k in state if k.startswith(prefix + ".")]:
        del state[key]


def complement(kept: torch.Tensor, size: int) -> torch.Tensor:
    keep = torch.zeros(size, dtype=torch.bool)
    keep[kept] = True
    return (~keep).nonzero().flatten()


@torch.no_grad()
def shrink_by_swap(model: nn.Module, plans: list[LayerPlan]) -> ShrunkModel:
    """A new, smaller model holding the kept slices of ``model`` (left unchanged), of ``model``'s own classes."""
    family = family_of(model)
    config = model.config
    prefix, layers = layer_stack_path(model), layer_stack(model)
    if len(plans) != len(layers):
        raise ValueError(f"{len(plans)} layer plans for {len(layers)} layers")
    heads_total, kv_total = family.num_heads(config), family.num_kv_heads(config)
    groups = heads_total // kv_total
    state = {k: v.clone() for k, v in model.state_dict().items()}
    edits: dict[str, dict] = {"linears": {}, "rows": {}, "attributes": {}, "empty": {}, "rotary": {}}

    def put(path: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        _drop(state, path)
        state[path + ".weight"] = weight.clone()
        if bias is not None:
            state[path + ".bias"] = bias.clone()
        edits["linears"][path] = [weight.shape[0], weight.shape[1], bias is not None]

    for i, (plan, layer) in enumerate(zip(plans, layers)):
        p = f"{prefix}.{i}."
        mod = {role: layer.get_submodule(path) for role, path in family.roles.items()}
        path = {role: p + rel for role, rel in family.roles.items()}
        head_dim = mod["query"].out_features // heads_total
        heads = checked_indices(plan.heads, heads_total, f"layer {i} heads")
        kv = sorted({h // groups for h in heads})
        if heads != [k * groups + j for k in kv for j in range(groups)]:
            raise ValueError(f"layer {i}: {family.name} shares each key-value head among {groups} query heads; "
                             f"a cut keeps whole groups, got heads {heads}")
        qk = checked_indices(plan.qk_dims, head_dim, f"layer {i} qk_dims")
        v = checked_indices(plan.v_dims, head_dim, f"layer {i} v_dims")
        width = max(len(qk), len(v)) if heads else 0
        if family.rotary:
            qk = _pad_pairs(qk, width, head_dim, i, family.name)
            width = len(qk) if heads else 0
        qk, v = _pad(qk, width, head_dim), _pad(v, width, head_dim)
        _cut_attention(family, model, mod, path, p, heads, kv, qk, v, head_dim, heads_total, groups, plan, put, edits, state)
        _cut_ffn(family, config, mod, path, plan, put, edits, state, i)

    shrunk_config = ShrunkConfig(base_config=config.to_dict(), task=task_of(model), **edits)
    shrunk = ShrunkModel(shrunk_config).to(next(model.parameters()).dtype)
    missing, unexpected = shrunk.inner.load_state_dict(state, strict=False)
    buffers = {name for name, _ in shrunk.inner.named_buffers()}
    missing = [m for m in missing if m not in buffers]
    if missing or unexpected:
        raise RuntimeError(f"internal cutting error: missing {missing}, unexpected {unexpected}")
    return shrunk.to(next(model.parameters()).device).train(model.training)


def _cut_attention(family: Family, model, mod, path, p, heads, kv, qk, v, head_dim, heads_total, groups, plan, put,
                   edits, state) -> None:
    q_rows, k_rows, v_rows = head_rows(heads, qk, head_dim), head_rows(kv, qk, head_dim), head_rows(kv, v, head_dim)
    o = mod["attn_out"]
    o_cols = head_rows(heads, v, head_dim)  # o's input for query head h reads value head h // groups
    # what removed value outputs still add: their bias (softmax rows sum to 1), per query head
    value_bias = mod["value"].bias
    fold = torch.zeros(o.out_features, dtype=o.weight.dtype)
    if value_bias is not None:
        per_query = value_bias.view(-1, head_dim).repeat_interleave(groups, 0).reshape(-1)
        removed = complement(o_cols, heads_total * head_dim)
        fold = o.weight[:, removed] @ per_query[removed]
    o_bias = (o.bias if o.bias is not None else torch.zeros_like(fold)) + fold
    keep_bias = o.bias is not None or bool(fold.abs().max() > 0)
    attention = p + family.attention_path
    inside = path["attn_out"].startswith(attention + ".")
    if not heads:
        _drop(state, attention)
        width = o.out_features if inside else 0
        edits["empty"][attention] = [width, keep_bias and inside]
        if inside and keep_bias:
            state[attention + ".bias"] = o_bias.clone()
        if not inside:
            put(path["attn_out"], o.weight[:, :0], o_bias if keep_bias else None)
        return
    for role, rows in (("query", q_rows), ("key", k_rows), ("value", v_rows)):
        m = mod[role]
        put(path[role], m.weight[rows], None if m.bias is None else m.bias[rows])
    module = model.get_submodule(attention)
    edits["attributes"][attention] = {family.head_size_attribute: len(qk)}
    if hasattr(module, "scaling"):  # the scale stays the dense model's: removed dimensions were zero
        edits["attributes"][attention]["scaling"] = float(module.scaling)
    elif len(qk) != head_dim:
        raise ValueError(f"{type(module).__name__} scales scores by its head width; a cut must keep whole heads")
    if hasattr(module, "num_attention_heads"):
        edits["attributes"][attention] |= {"num_attention_heads": len(heads)}
    if hasattr(module, "all_head_size"):
        edits["attributes"][attention] |= {"all_head_size": len(heads) * len(qk)}
    if family.rotary and len(qk) != head_dim:  # the kept pairs' columns of the cos / sin table
        edits["rotary"][attention] = list(qk)
        state[attention + ".rotary_index"] = torch.tensor(qk, dtype=torch.long)
    _put_out(path["attn_out"], o.weight[:, o_cols], o_bias if keep_bias else None, plan.attn_out_rows, put, edits, state)


def _cut_ffn(family: Family, config, mod, path, plan, put, edits, state, i) -> None:
    ffn_in, ffn_out = mod["ffn_in"], mod["ffn_out"]
    units = torch.tensor(checked_indices(plan.ffn_units, ffn_in.out_features, f"layer {i} ffn_units"), dtype=torch.long)
    removed = complement(units, ffn_in.out_features)
    bias = ffn_out.bias
    if ffn_in.bias is not None and not family.gated and len(removed):
        act = ACT2FN[getattr(config, family.activation_config_key)]
        fold = ffn_out.weight[:, removed] @ act(ffn_in.bias[removed])
        bias = (bias if bias is not None else torch.zeros_like(fold)) + fold
    for role in ("ffn_gate", "ffn_in"):
        if role in mod:
            m = mod[role]
            put(path[role], m.weight[units], None if m.bias is None else m.bias[units])
    _put_out(path["ffn_out"], ffn_out.weight[:, units], bias, plan.ffn_out_rows, put, edits, state)


def _put_out(path: str, weight: torch.Tensor, bias: torch.Tensor | None, rows: list[int] | None, put, edits,
             state) -> None:
    """An output Linear: all rows, or only ``rows`` (:class:`RowLinear`, full-size bias)."""
    if rows is None:
        put(path, weight, bias)
        return
    kept = torch.tensor(sorted(rows), dtype=torch.long)
    _drop(state, path)
    state[path + ".weight"] = weight[kept].clone()
    state[path + ".rows"] = kept.clone()
    state[path + ".full_bias"] = bias.clone() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    edits["rows"][path] = [weight.shape[0], weight.shape[1], kept.tolist()]
