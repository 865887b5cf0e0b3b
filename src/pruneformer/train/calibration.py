"""Layer-by-layer calibration for one-shot pruning (the schedule of SparseGPT's and Wanda's released code).

1. Run the calibration batches through the model up to its first transformer layer and keep that layer's
   inputs (hidden states plus whatever the model passes alongside: attention mask, rotary embeddings).
2. For each layer: run it on the kept inputs with a hook on every target Linear, so the method sees the
   inputs each one receives (:meth:`PruningMethod.observe`); prune the layer's targets
   (:meth:`PruningMethod.prune_target`); run the *pruned* layer again to get the next layer's inputs.

Later layers are therefore calibrated on what the pruned earlier layers really produce, and only one
layer's statistics are alive at a time. The model's own forward is used only to reach the first layer, so
this works for any architecture whose layer stack :func:`~pruneformer.core.targets.layer_stack` finds.

Padding never enters a statistic: a batch's ``attention_mask`` selects the tokens each target's inputs are
taken from (padded sentences of a classifier's task would otherwise add rows of pad-token activations to
every Gram matrix, weighting the reconstruction towards positions the model never reads).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.targets import Target, layer_stack
from ..errors import PruneformerError
from ..methods.base import PruningMethod

LayerInputs = list[tuple[tuple[Any, ...], dict[str, Any]]]


class _ReachedFirstLayer(Exception):
    """Raised by the capture hook to stop the forward pass once the first layer's inputs are known."""


@torch.no_grad()
def capture_first_layer_inputs(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> LayerInputs:
    """The positional and keyword arguments the first transformer layer receives, one entry per batch."""
    captured: LayerInputs = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise _ReachedFirstLayer

    device = next(model.parameters()).device
    handle = layer_stack(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)
            except _ReachedFirstLayer:
                pass
    finally:
        handle.remove()
    return captured


def _hidden(output: Any) -> torch.Tensor:
    """A layer's hidden-state output (transformers 5 returns a tensor; older versions a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_hidden(args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[tuple, dict]:
    """The same layer call with new hidden states, wherever the model passed them."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _token_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The batch's real (non-padding) tokens, ``[batch, seq]`` bool, or None when nothing is padded."""
    mask = batch.get("attention_mask")
    if mask is None or bool(mask.bool().all()):
        return None
    return mask.bool()


def _real_tokens(inputs: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """A target's inputs ``[tokens, features]`` with the padded positions dropped."""
    flat = inputs.reshape(-1, inputs.shape[-1])
    if token_mask is None:
        return flat
    if token_mask.numel() != flat.shape[0]:
        raise PruneformerError(f"Calibration: a layer saw {flat.shape[0]} token positions but the batch's attention "
                               f"mask has {token_mask.numel()}.", "calibrate on batches of token ids with their mask")
    return flat[token_mask.reshape(-1).to(flat.device)]


@torch.no_grad()
def prune_layerwise(model: nn.Module, method: PruningMethod, batches: Iterable[Mapping[str, torch.Tensor]],
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Calibrate and prune ``method``'s targets layer by layer; returns ``method.finalize()``'s masks.

    ``method`` must already be attached to ``model``. ``batches`` are model inputs (``input_ids`` and
    optionally ``attention_mask``), e.g. :func:`pruneformer.models.llm.calibration_batches`.
    """
    batches = list(batches)
    token_masks = [_token_mask(batch) for batch in batches]
    by_layer: dict[int, list[Target]] = {}
    for target in method.targets:
        by_layer.setdefault(target.layer, []).append(target)
    was_training = model.training
    model.eval()
    try:
        inputs = capture_first_layer_inputs(model, batches)
        if not inputs:
            raise PruneformerError("No calibration batch was given.", "pass at least one batch of token ids")
        last = max(by_layer, default=-1)
        layers = layer_stack(model)
        for index in tqdm(range(last + 1), desc=f"{method.name} layers", disable=not progress, leave=False):
            layer = layers[index]
            targets = by_layer.get(index, [])
            current: list[torch.Tensor | None] = [None]
            handles = [t.module.register_forward_hook(
                lambda module, args, output, t=t: method.observe(t, _real_tokens(args[0], current[0])))
                for t in targets]
            try:
                for (args, kwargs), token_mask in zip(inputs, token_masks) if targets else ():
                    current[0] = token_mask
                    layer(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
            for target in targets:
                method.prune_target(target)
            if index < last:
                inputs = [_with_hidden(args, kwargs, _hidden(layer(*args, **kwargs))) for args, kwargs in inputs]
    finally:
        model.train(was_training)
    return method.finalize()
