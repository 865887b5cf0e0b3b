"""Which Linear layers are pruned, per architecture.

The layouts themselves belong to the model families (``pruneformer.families``: where a family's layers live and
what each Linear inside a layer does: query, key, value, attention output, FFN gate, in, out); this module
turns a model into a flat list of :class:`Target`, so methods never look at module names.
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
from ..families import Family, families, family_of
from ..families.bert import BERT_ROLES

#: The encoder roles (BERT family), in layer order.
ROLES = tuple(BERT_ROLES)


def all_roles() -> tuple[str, ...]:
    """Every role a registered family uses (decoders add ``ffn_gate``, GPT-2 its fused ``qkv``)."""
    return tuple(dict.fromkeys(role for family in families() for role in family.roles))


def causal_lm_types() -> tuple[str, ...]:
    """Decoder-only causal LMs: the architectures one-shot calibration (Wanda, SparseGPT) and perplexity target."""
    return tuple(t for family in families() if family.causal_lm for t in family.model_types)


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


def _find_layers(model: nn.Module, layout: Family) -> tuple[str, nn.ModuleList]:
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


def layer_stack_path(model: nn.Module) -> str:
    """The qualified name of the model's layer stack, e.g. ``roberta.encoder.layer``."""
    return _find_layers(model, family_of(model))[0]


def layer_stack(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer layers (what :attr:`Target.layer` indexes), e.g. ``model.layers``."""
    return _find_layers(model, family_of(model))[1]


def all_targets(model: nn.Module) -> list[Target]:
    """Every Linear of every transformer layer, in layer then role order."""
    layout = family_of(model)
    prefix, layers = _find_layers(model, layout)
    found: list[Target] = []
    for index, layer in enumerate(layers):
        for role, rel in layout.roles.items():
            try:
                module = layer.get_submodule(rel)
            except AttributeError:
                if _in_empty_block(layer, rel):
                    continue  # a shrunk layer whose attention has no head left: nothing to prune there
                raise
            if not isinstance(module, (nn.Linear, Conv1D)):
                raise ModelError(f"{prefix}.{index}.{rel} is not a Linear layer.", "report this model")
            found.append(Target(f"{prefix}.{index}.{rel}", module, role, index))
    return found


def _in_empty_block(layer: nn.Module, path: str) -> bool:
    """Whether ``path`` lies under a block that a physical cut removed entirely (``empty_block``)."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        try:
            if getattr(layer.get_submodule(".".join(parts[:i])), "empty_block", False):
                return True
        except AttributeError:
            return False
    return False


def _matches(target: Target, pattern: str) -> bool:
    """A pattern is a role name (``query``, ``ffn_in``...) or a regular expression on the layer name."""
    if pattern in all_roles():
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
