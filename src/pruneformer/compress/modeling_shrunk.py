"""Any transformers model family with smaller layers: the model a structured run leaves for families other
than BERT (``families.Family.cut == "module-swap"``).

Self-contained on purpose: it imports only torch and transformers, never pruneformer. Saving copies it into the
model directory and points ``auto_map`` at it, so ``AutoModelFor<Task>.from_pretrained(directory,
trust_remote_code=True)`` loads it with plain transformers, offline.

The model is the family's own transformers class (``base_config`` holds its config), built from its config and
then edited, in this order, as ``config.json`` says:

* ``linears``: ``{path: [out_features, in_features, bias]}``: the Linear at ``path`` is replaced by a smaller
  one (heads, head dimensions or FFN units removed);
* ``rows``: ``{path: [out_features, in_features, kept output rows]}``: the Linear computes only those rows;
  the others are its bias alone (:class:`RowLinear`, full-size bias);
* ``attributes``: ``{path: {name: value}}``: per-layer head width and attention scale written onto the
  attention module, whose forward splits heads with ``view(..., -1, head_size)``;
* ``empty``: ``{path: [width, bias]}``: an attention block with no head left returns its bias (or zeros);
* ``rotary``: ``{path: [kept dimensions]}``: a rotary attention block that kept fewer rotated pairs reads only
  their columns of the cos / sin table the model shares between layers (a forward pre-hook, :func:`_slice_rotary`).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

#: Label and token fields the wrapper's config mirrors from the family's (evaluation, padding, pipelines).
MIRRORED = ("id2label", "label2id", "pad_token_id", "problem_type")


class ShrunkConfig(PretrainedConfig):
    """The family's config (``base_config``) plus the edits that make its layers smaller."""

    model_type = "pruneformer-shrunk"

    def __init__(self, base_config: dict[str, Any] | None = None, task: str = "AutoModelForSequenceClassification",
                 linears: dict | None = None, rows: dict | None = None, attributes: dict | None = None,
                 empty: dict | None = None, rotary: dict | None = None, **kwargs: Any) -> None:
        self.base_config = dict(base_config or {})
        self.task = task
        self.linears = dict(linears or {})
        self.rows = dict(rows or {})
        self.attributes = dict(attributes or {})
        self.empty = dict(empty or {})
        self.rotary = dict(rotary or {})
        for key in MIRRORED:
            if key in self.base_config and key not in kwargs:
                kwargs[key] = self.base_config[key]
        super().__init__(**kwargs)

    @property
    def base_model_type(self) -> str:
        return str(self.base_config.get("model_type", ""))

    def family_config(self) -> PretrainedConfig:
        settings = dict(self.base_config)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


class RowLinear(nn.Linear):
    """A Linear computing only ``rows`` of its ``full_out`` outputs; every output gets ``full_bias``."""

    def __init__(self, in_features: int, rows: list[int], full_out: int) -> None:
        super().__init__(in_features, len(rows), bias=False)
        # persistent: from_pretrained builds models on the meta device, where a non-persistent buffer's
        # values would be lost
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long))
        self.full_bias = nn.Parameter(torch.zeros(full_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.full_bias.expand(*x.shape[:-1], self.full_bias.shape[0])
        return out.index_add(-1, self.rows, nn.functional.linear(x, self.weight))


class EmptyAttention(nn.Module):
    """An attention block with no head left: its output is its bias (``width`` features; zeros without bias)."""

    empty_block = True  # what pruneformer's target search reads: this layer's attention Linears are gone

    def __init__(self, width: int, bias: bool) -> None:
        super().__init__()
        self.width = width
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        shape = (*hidden_states.shape[:-1], self.width)
        out = hidden_states.new_zeros(shape) if self.bias is None else self.bias.expand(shape)
        return out, None


def _slice_rotary(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: the (cos, sin) position embeddings restricted to the block's kept dimensions."""
    index = module.rotary_index
    if "position_embeddings" in kwargs:
        cos, sin = kwargs["position_embeddings"]
        kwargs = {**kwargs, "position_embeddings": (cos.index_select(-1, index), sin.index_select(-1, index))}
    else:
        cos, sin = args[1]
        args = (args[0], (cos.index_select(-1, index), sin.index_select(-1, index)), *args[2:])
    return args, kwargs


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def apply_edits(model: nn.Module, config: ShrunkConfig) -> nn.Module:
    """Make ``model`` (the family's class, freshly built) take the shapes ``config`` records."""
    for path, (out_features, in_features, bias) in config.linears.items():
        _set(model, path, nn.Linear(int(in_features), int(out_features), bias=bool(bias)))
    for path, (full_out, in_features, rows) in config.rows.items():
        _set(model, path, RowLinear(int(in_features), [int(r) for r in rows], int(full_out)))
    for path, values in config.attributes.items():
        module = model.get_submodule(path)
        for name, value in values.items():
            setattr(module, name, value)
    for path, (width, bias) in config.empty.items():
        _set(model, path, EmptyAttention(int(width), bool(bias)))
    for path, kept in config.rotary.items():
        module = model.get_submodule(path)
        # persistent, as RowLinear's rows: from_pretrained builds on the meta device and loads it from the weights
        module.register_buffer("rotary_index", torch.tensor([int(d) for d in kept], dtype=torch.long))
        module.register_forward_pre_hook(_slice_rotary, with_kwargs=True)
    return model


class ShrunkModel(PreTrainedModel):
    """The family's model with smaller layers; ``forward`` is the family's own."""

    config_class = ShrunkConfig
    base_model_prefix = "inner"
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: ShrunkConfig) -> None:
        super().__init__(config)
        auto = getattr(transformers, config.task)
        self.inner = apply_edits(auto.from_config(config.family_config()), config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # weights come from the checkpoint
        pass

    def set_attn_implementation(self, implementation: str) -> None:
        self.inner.set_attn_implementation(implementation)
        self.config._attn_implementation = implementation

    def get_input_embeddings(self) -> nn.Module:
        return self.inner.get_input_embeddings()

    @property
    def forward_module(self) -> nn.Module:
        """The module whose ``forward`` this one runs (its signature names the inputs the model takes)."""
        return self.inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)
