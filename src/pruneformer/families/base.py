"""What pruneformer must know about one model family, behind one interface, and the registry of families.

A :class:`Family` is data: where a model's stack of transformer layers is, what each Linear inside one layer
does (its *role*: query, key, value, attention output, FFN gate/in/out), how its heads are laid out, what its
inputs are and how it may be cut physically. ``core/targets.py`` finds layers from it, ``compress/`` cuts
with it, ``models/`` loads with it and ``deploy/`` exports with it; none of them tests a ``model_type``.

Adding a family is one module that calls :func:`register_family` (``families/__init__.py`` imports the
built-in ones; a user's or a test's module registers its own the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from torch import nn

from ..errors import ModelError

#: How a family's layers are physically cut (``compress/``): ``shrunk-bert`` rebuilds the model as
#: ``compress.modeling_shrunk_bert`` (per-layer widths, BERT's embeddings and pooler); ``module-swap`` keeps
#: the family's own transformers classes and swaps in smaller Linears (``compress.modeling_shrunk``).
Cut = Literal["shrunk-bert", "module-swap"]
Modality = Literal["text", "image"]


@dataclass(frozen=True)
class Family:
    """One model family: layout, head layout, inputs and how it is cut.

    ``layers_path``: the ``nn.ModuleList`` of transformer layers, as a suffix of its qualified name (the task
    model's prefix, ``bert.`` or ``model.``, is found by search). ``roles``: role -> module path inside one
    layer. ``attention_path``: the module inside a layer whose forward splits query/key/value into heads with
    ``view(..., -1, <head_size_attribute>)`` and scales scores by its ``scaling`` (what a cut rewrites).
    ``cut``: how physical shrinking works, None with ``no_cut_reason`` where it does not.
    ``rotary``: query/key dimensions are rotated in pairs (a cut of single query-key dimensions is refused).
    ``head_module``: the task head's last name (``classifier``; decoders' sequence classifiers call it ``score``),
    what ``--keep-fp32 classifier`` keeps in fp32. ``config_equals``: config values the layout assumes (ALBERT's
    single layer group); another value is refused in one line when the model is first looked at.
    ``residual_inputs``: output role -> (module path inside a layer, argument index, argument name) of the call
    that receives the residual stream the role's output is added to (BERT's ``attention.output(hidden, input)``;
    a pre-norm decoder's layer input and post-attention norm), so a rescaling can match the residual sum;
    a family without it is matched on the Linear's output alone. ``pooled_token``: the position a sequence
    classifier reads from the last layer (BERT's pooler: token 0), None where it reads more (a decoder's last
    real token, DINOv2's class token with the patches' mean).
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    roles: Mapping[str, str]
    attention_path: str | None = None
    head_size_attribute: str = "head_dim"
    modality: Modality = "text"
    causal_lm: bool = False
    rotary: bool = False
    cut: Cut | None = None
    no_cut_reason: str = ""
    head_config_keys: tuple[str, ...] = ("num_attention_heads", "n_heads")
    kv_head_config_key: str | None = None
    activation_config_key: str = "hidden_act"
    head_module: str = "classifier"
    config_equals: Mapping[str, Any] = field(default_factory=dict)
    residual_inputs: Mapping[str, tuple[str, int, str]] = field(default_factory=dict)
    pooled_token: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gated(self) -> bool:
        """A gated FFN (SwiGLU): the gate is cut with its up projection, unit by unit."""
        return "ffn_gate" in self.roles

    def num_heads(self, config: Any) -> int:
        for key in self.head_config_keys:
            heads = getattr(config, key, None)
            if heads:
                return int(heads)
        raise ModelError(f"The {self.name} config has no head count ({' or '.join(self.head_config_keys)}).",
                         "pass a complete config.json")

    def num_kv_heads(self, config: Any) -> int:
        """Key-value heads (grouped-query attention); the head count where there is no such key."""
        value = getattr(config, self.kv_head_config_key, None) if self.kv_head_config_key else None
        return int(value) if value else self.num_heads(config)

    def check_config(self, config: Any) -> None:
        """Raise :class:`ModelError` when ``config`` has a value this family's layout does not describe."""
        for key, expected in self.config_equals.items():
            found = getattr(config, key, expected)
            if found != expected:
                raise ModelError(f"{self.name} models with {key}={found} are not supported (the layout assumes "
                                 f"{key}={expected}).", f"use a checkpoint with {key}={expected}")

    def check_cut(self) -> None:
        """Raise :class:`ModelError` (before any training) when this family cannot be shrunk physically."""
        if self.cut is None:
            raise ModelError(f"Physical shrinking does not support {self.name} models: {self.no_cut_reason}.",
                             "prune it with masks (N:M, unstructured) or use a family that can be shrunk")


_FAMILIES: dict[str, Family] = {}
_BY_TYPE: dict[str, Family] = {}
#: Model types users bring that no family describes, and why (said instead of "no known layout").
UNSUPPORTED: dict[str, str] = {
    "swin": "its blocks sit in four stages of different widths joined by patch merging, with windowed attention "
            "and a relative-position bias per block, not in one stack of equal layers",
    "swinv2": "its blocks sit in four stages of different widths joined by patch merging, with windowed attention, "
              "not in one stack of equal layers",
}


def register_family(family: Family, replace: bool = False) -> Family:
    """Make ``family`` known to every layer of pruneformer; its model types must be new (or ``replace``)."""
    taken = [t for t in family.model_types if t in _BY_TYPE and _BY_TYPE[t].name != family.name]
    if (family.name in _FAMILIES or taken) and not replace:
        raise ValueError(f"family '{family.name}' or model type(s) {taken} already registered")
    for old in [t for t, f in _BY_TYPE.items() if f.name == family.name]:
        del _BY_TYPE[old]
    _FAMILIES[family.name] = family
    for model_type in family.model_types:
        _BY_TYPE[model_type] = family
    return family


def unregister_family(name: str) -> None:
    """Forget a family (tests that register one of their own)."""
    family = _FAMILIES.pop(name)
    for model_type in family.model_types:
        _BY_TYPE.pop(model_type, None)


def families() -> list[Family]:
    return list(_FAMILIES.values())


def supported_model_types() -> set[str]:
    return set(_BY_TYPE)


def family_for_type(model_type: str | None) -> Family:
    """The family of a ``config.model_type``; a one-line error naming the known ones otherwise."""
    if model_type in UNSUPPORTED and model_type not in _BY_TYPE:
        raise ModelError(f"Model type '{model_type}' is not supported: {UNSUPPORTED[model_type]}.",
                         "use a ViT, DeiT or DINOv2 backbone for images, or register a family (pruneformer.families)")
    if model_type not in _BY_TYPE:
        raise ModelError(f"Model type '{model_type or 'unknown'}' has no known layer layout.",
                         f"use one of: {', '.join(sorted(_BY_TYPE))}, or register a family (pruneformer.families)")
    return _BY_TYPE[model_type]


def family_of(model: nn.Module) -> Family:
    """The family of a model, read from its config (a shrunk model's: the family it was cut from)."""
    config = getattr(model, "config", None)
    family = family_for_type(getattr(config, "base_model_type", None) or getattr(config, "model_type", None))
    family.check_config(config)
    return family
