"""Physically remove heads, head dimensions, FFN units and output rows from a BERT classifier.

:func:`shrink_model` takes a dense ``BertForSequenceClassification`` and one :class:`LayerPlan` per layer
and returns a :class:`ShrunkBertForSequenceClassification` holding only the kept slices. Pure functions:
nothing here trains, scores or masks; the pruning methods decide the plan.

Exactness. Removing a unit whose weights are already zero leaves the outputs unchanged, biases included,
because the constant such a unit still contributes is folded into the next bias:

* a value dimension (or a whole head) whose value weights are zero outputs ``b_v`` after attention
  (the probabilities sum to 1), so ``W_O[:, removed] @ b_v[removed]`` is added to the output bias;
* an FFN unit whose FFN-in weights are zero outputs ``act(b_1)``, so ``W_2[:, removed] @ act(b_1[removed])``
  is added to the FFN-out bias;
* an output row of the attention-output or FFN-out Linear whose weights are zero outputs its bias, which the
  shrunk model keeps at full size;
* a query/key dimension is exact to remove when its *key* weights are zero (its score term
  ``q_d(x_i) * b_k,d`` is the same for every key, and softmax ignores a constant) or when its query output is
  zero (weights and bias).

Per-head widths. ``qk_dims`` / ``v_dims`` apply to every kept head of a layer, so all heads of a layer
have the same width. A caller whose heads keep different numbers of dimensions pads each head to the
layer's largest count with that head's next-best dimensions; the result is still exact when those extra
dimensions are masked to zero, and costs only the padding.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..core.structure import LayerPlan, check_compressible
from ..core.targets import all_targets, layer_stack, layer_stack_path
from ..families import family_of
from .modeling_shrunk_bert import ShrunkBertConfig, ShrunkBertForSequenceClassification
from .swap import checked_indices, complement, head_rows, shrink_by_swap

#: config.json keys that belong to the dense model's class, not to its shape.
_DROPPED_CONFIG_KEYS = ("model_type", "architectures", "auto_map", "transformers_version", "pruneformer")


def shrink_model(model: nn.Module, plans: list[LayerPlan]) -> nn.Module:
    """A new, smaller model holding the kept slices of ``model`` (which is left unchanged), cut the way its
    family says (``Family.cut``): BERT into :mod:`.modeling_shrunk_bert`, the others by :mod:`.swap`."""
    family = check_compressible(model)
    if family.cut == "module-swap":
        return shrink_by_swap(model, plans)
    return shrink_bert(model, plans)


@torch.no_grad()
def shrink_bert(model: nn.Module, plans: list[LayerPlan]) -> ShrunkBertForSequenceClassification:
    """:func:`shrink_model` for BERT: a :class:`ShrunkBertForSequenceClassification` (per-layer widths)."""
    config = model.config
    layers = model.bert.encoder.layer
    if len(plans) != len(layers):
        raise ValueError(f"{len(plans)} layer plans for {len(layers)} layers")
    heads_total, hidden = config.num_attention_heads, config.hidden_size
    head_dim = hidden // heads_total
    act = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act

    shapes: dict[str, list] = {k: [] for k in ("layer_num_heads", "layer_qk_head_dim", "layer_v_head_dim",
                                               "layer_intermediate_size", "layer_attn_out_rows", "layer_ffn_out_rows")}
    state: dict[str, torch.Tensor] = {}
    for i, (plan, layer) in enumerate(zip(plans, layers)):
        heads = checked_indices(plan.heads, heads_total, f"layer {i} heads")
        qk = checked_indices(plan.qk_dims, head_dim, f"layer {i} qk_dims")
        v = checked_indices(plan.v_dims, head_dim, f"layer {i} v_dims")
        units = checked_indices(plan.ffn_units, config.intermediate_size, f"layer {i} ffn_units")
        attn_rows = None if plan.attn_out_rows is None else checked_indices(plan.attn_out_rows, hidden, f"layer {i} attn_out_rows")
        ffn_rows = None if plan.ffn_out_rows is None else checked_indices(plan.ffn_out_rows, hidden, f"layer {i} ffn_out_rows")
        if not heads:
            qk, v = [], []
        for name, value in (("layer_num_heads", len(heads)), ("layer_qk_head_dim", len(qk)),
                            ("layer_v_head_dim", len(v)), ("layer_intermediate_size", len(units)),
                            ("layer_attn_out_rows", attn_rows), ("layer_ffn_out_rows", ffn_rows)):
            shapes[name].append(value)

        p = f"bert.encoder.layer.{i}."
        attn, out = layer.attention.self, layer.attention.output
        qk_rows, v_rows = head_rows(heads, qk, head_dim), head_rows(heads, v, head_dim)
        for name, module, rows in (("query", attn.query, qk_rows), ("key", attn.key, qk_rows), ("value", attn.value, v_rows)):
            state[p + f"attention.self.{name}.weight"] = module.weight[rows].clone()
            state[p + f"attention.self.{name}.bias"] = module.bias[rows].clone()
        removed_v = complement(v_rows, hidden)
        o_bias = out.dense.bias + out.dense.weight[:, removed_v] @ attn.value.bias[removed_v]
        _put_output(state, p + "attention.output.", out.dense.weight[:, v_rows], o_bias, attn_rows)
        _copy_layer_norm(state, p + "attention.output.LayerNorm.", out.LayerNorm)

        ffn_in, ffn_out = layer.intermediate.dense, layer.output.dense
        units_t = torch.tensor(units, dtype=torch.long)
        removed_u = complement(units_t, config.intermediate_size)
        state[p + "intermediate.dense.weight"] = ffn_in.weight[units_t].clone()
        state[p + "intermediate.dense.bias"] = ffn_in.bias[units_t].clone()
        f_bias = ffn_out.bias + ffn_out.weight[:, removed_u] @ act(ffn_in.bias[removed_u])
        _put_output(state, p + "output.", ffn_out.weight[:, units_t], f_bias, ffn_rows)
        _copy_layer_norm(state, p + "output.LayerNorm.", layer.output.LayerNorm)

    for name, tensor in model.state_dict().items():  # embeddings, pooler, classifier
        if not name.startswith("bert.encoder."):
            state[name] = tensor.clone()
    settings = {k: v for k, v in config.to_dict().items() if k not in _DROPPED_CONFIG_KEYS}
    shrunk_config = ShrunkBertConfig(**{**settings, **shapes, "original_head_dim": head_dim})
    shrunk = ShrunkBertForSequenceClassification(shrunk_config).to(next(model.parameters()).dtype)
    missing, unexpected = shrunk.load_state_dict(state, strict=False)
    buffers = {name for name, _ in shrunk.named_buffers()}
    if [m for m in missing if m not in buffers] or unexpected:
        raise RuntimeError(f"internal slicing error: missing {missing}, unexpected {unexpected}")
    return shrunk.to(next(model.parameters()).device).train(model.training)


def _put_output(state: dict[str, torch.Tensor], prefix: str, weight: torch.Tensor, bias: torch.Tensor,
                rows: list[int] | None) -> None:
    """The output Linear: all rows with their bias, or the kept rows with a separate full-size bias."""
    if rows is None:
        state[prefix + "dense.weight"] = weight.clone()
        state[prefix + "dense.bias"] = bias.clone()
    else:
        state[prefix + "dense.weight"] = weight[torch.tensor(rows, dtype=torch.long)].clone()
        state[prefix + "bias"] = bias.clone()


def _copy_layer_norm(state: dict[str, torch.Tensor], prefix: str, norm: nn.LayerNorm) -> None:
    state[prefix + "weight"] = norm.weight.clone()
    state[prefix + "bias"] = norm.bias.clone()


def kept_encoder_weights(model: nn.Module) -> int:
    """Weights of the transformer layers' Linears (no biases) of a dense, masked or shrunk model of any family."""
    stack = layer_stack(model)
    return sum(m.weight.numel() for m in stack.modules() if isinstance(m, nn.Linear))


def kept_per_layer(model: nn.Module) -> list[dict[str, int]]:
    """Per layer of a shrunk model (either kind): kept heads, FFN units and output rows of both output Linears."""
    family, config = family_of(model), model.config
    found: dict[int, dict[str, nn.Module]] = {}
    for target in all_targets(model):
        found.setdefault(target.layer, {})[target.role] = target.module
    layers = []
    for i, roles in sorted(found.items()):
        if isinstance(config, ShrunkBertConfig):
            heads = config.layer_num_heads[i]
        else:
            root = getattr(model, "forward_module", model)  # the edits name paths inside the wrapped model
            attention = f"{layer_stack_path(root)}.{i}.{family.attention_path}"
            width = config.attributes.get(attention, {}).get(family.head_size_attribute)
            heads = roles["query"].out_features // width if width and "query" in roles else 0
        layers.append({"layer": i, "heads": heads if "query" in roles else 0, "ffn_units": roles["ffn_in"].out_features,
                       # an attention block cut to nothing has no Linear left: its output is its bias
                       "attn_out_rows": roles["attn_out"].out_features if "attn_out" in roles else 0,
                       "ffn_out_rows": roles["ffn_out"].out_features})
    return layers
