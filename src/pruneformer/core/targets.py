"""Which Linear layers are pruned, per architecture.

This is the only module that knows model layouts. It maps each supported architecture to where its
transformer layers live and what each Linear inside a layer does (query, key, value, attention output,
FFN in, FFN out), so methods can work on a flat list of :class:`Target` and never look at module names.
Embeddings, the pooler and the classifier (or a decoder's LM head) are never targets: pruning them costs
accuracy and they are a small share of the compute.

GPT-2 builds its layers from ``Conv1D``, which stores its weight as ``[in_features, out_features]``, the
transpose of ``nn.Linear``. :attr:`Target.linear_weight` hides that: it is always ``[out, in]`` (a view
of the stored tensor), so every pattern keeps running along the *input* dimension, as sparse kernels need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import ModelError, RecipeError


@dataclass(frozen=True)
class LayerLayout:
    """Where the stack of transformer layers is, and the role of each Linear inside one layer."""

    layers_path: str
    roles: dict[str, str]  # role -> module path relative to one layer


_BERT_ROLES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
_DISTILBERT_ROLES = {
    "query": "attention.q_lin",
    "key": "attention.k_lin",
    "value": "attention.v_lin",
    "attn_out": "attention.out_lin",
    "ffn_in": "ffn.lin1",
    "ffn_out": "ffn.lin2",
}

_LLAMA_ROLES = {
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_in": "mlp.up_proj",
    "ffn_out": "mlp.down_proj",
}
_GPT2_ROLES = {  # Conv1D modules; c_attn is Q, K and V fused into one weight
    "qkv": "attn.c_attn",
    "attn_out": "attn.c_proj",
    "ffn_in": "mlp.c_fc",
    "ffn_out": "mlp.c_proj",
}

#: model_type -> layout. BERT-like encoders share one layout.
LAYOUTS: dict[str, LayerLayout] = {
    **{
        name: LayerLayout("encoder.layer", _BERT_ROLES)
        for name in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")
    },
    "distilbert": LayerLayout("transformer.layer", _DISTILBERT_ROLES),
    "shrunk-bert": LayerLayout("encoder.layer", _BERT_ROLES),  # physically pruned BERT (compress/)
    "llama": LayerLayout("layers", _LLAMA_ROLES),
    "gpt2": LayerLayout("h", _GPT2_ROLES),
}

#: The encoder roles (BERT family), in layer order.
ROLES = tuple(_BERT_ROLES)
#: Every role any layout uses (decoders add ``ffn_gate`` and GPT-2's fused ``qkv``).
ALL_ROLES = tuple(dict.fromkeys(role for layout in LAYOUTS.values() for role in layout.roles))
#: Decoder-only causal LMs: the architectures one-shot calibration (Wanda, SparseGPT) and perplexity target.
CAUSAL_LM_TYPES = ("llama", "gpt2")


def supported_model_types() -> set[str]:
    """Architectures whose layers :func:`resolve_targets` can find."""
    return set(LAYOUTS)


@dataclass(frozen=True)
class Target:
    """One prunable Linear (or GPT-2 ``Conv1D``): its qualified name, the module, its role and layer index."""

    name: str
    module: nn.Module
    role: str
    layer: int

    @property
    def transposed(self) -> bool:
        """True when the module stores its weight as ``[in, out]`` (GPT-2's ``Conv1D``)."""
        return isinstance(self.module, Conv1D)

    @property
    def linear_weight(self) -> torch.Tensor:
        """The weight as ``[out_features, in_features]``: the parameter itself, or a view of a Conv1D's.

        In-place edits of the view (masking, ADMM's proximal step) change the stored weight.
        """
        weight = self.module.weight
        return weight.t() if self.transposed else weight

    @property
    def linear_grad(self) -> torch.Tensor | None:
        """The weight's gradient as ``[out_features, in_features]`` (a view), or None before backward."""
        grad = self.module.weight.grad
        return grad.t() if grad is not None and self.transposed else grad

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.linear_weight.shape)  # type: ignore[return-value]


def _layout_for(model: nn.Module) -> LayerLayout:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LAYOUTS:
        raise ModelError(
            f"Model type '{model_type}' has no known layer layout.",
            f"use one of: {', '.join(sorted(LAYOUTS))}",
        )
    return LAYOUTS[model_type]


def _find_layers(model: nn.Module, layout: LayerLayout) -> tuple[str, nn.ModuleList]:
    """Find the layer stack under the task model (e.g. ``bert.encoder.layer``)."""
    for name, module in model.named_modules():
        if (name == layout.layers_path or name.endswith("." + layout.layers_path)) and isinstance(
            module, nn.ModuleList
        ):
            return name, module
    raise ModelError(
        f"Could not find the transformer layers ('{layout.layers_path}') in {type(model).__name__}.",
        "pass a standard Hugging Face model of a supported architecture",
    )


def layer_stack(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer layers (what :attr:`Target.layer` indexes), e.g. ``model.layers``."""
    return _find_layers(model, _layout_for(model))[1]


def all_targets(model: nn.Module) -> list[Target]:
    """Every Linear of every transformer layer, in layer then role order."""
    layout = _layout_for(model)
    prefix, layers = _find_layers(model, layout)
    found: list[Target] = []
    for index, layer in enumerate(layers):
        for role, rel in layout.roles.items():
            module = layer.get_submodule(rel)
            if not isinstance(module, (nn.Linear, Conv1D)):
                raise ModelError(f"{prefix}.{index}.{rel} is not a Linear layer.", "report this model")
            found.append(Target(f"{prefix}.{index}.{rel}", module, role, index))
    return found


def _matches(target: Target, pattern: str) -> bool:
    """A pattern is a role name (``query``, ``ffn_in``...) or a regular expression on the layer name."""
    if pattern in ALL_ROLES:
        return target.role == pattern
    try:
        return re.search(pattern, target.name) is not None
    except re.error as exc:
        raise RecipeError(f"Layer pattern '{pattern}' is not a valid regular expression ({exc}).",
                          "escape special characters, e.g. 'layer\\.0\\.'") from exc


def resolve_targets(
    model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> list[Target]:
    """The Linears to prune: all encoder Linears by default, narrowed by include and exclude patterns.

    Every include and exclude pattern must match at least one layer: a typo that silently prunes
    nothing (or everything) is worse than an error.
    """
    candidates = all_targets(model)
    include = list(include or [])
    exclude = list(exclude or [])
    for kind, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(_matches(t, pattern) for t in candidates):
                raise RecipeError(
                    f"The {kind} pattern '{pattern}' matches no prunable layer.",
                    f"use a role ({', '.join(dict.fromkeys(t.role for t in candidates))}) "
                    f"or a regex on names like '{candidates[0].name}'",
                )
    chosen = [t for t in candidates if not include or any(_matches(t, p) for p in include)]
    chosen = [t for t in chosen if not any(_matches(t, p) for p in exclude)]
    if not chosen:
        raise RecipeError("The include/exclude patterns leave no layer to prune.", "loosen --exclude")
    return chosen
