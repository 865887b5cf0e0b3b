"""Prediction and scoring on a tokenized split, batched with dynamic padding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.metrics import compute_metrics
from .distributed import current as current_world

if TYPE_CHECKING:
    from ..data import DataBundle

Collator = Callable[[list[dict]], dict[str, torch.Tensor]]


def iterate_batches(examples: Sequence[dict], order: Sequence[int], batch_size: int, collator: Collator):
    """Yield collated batches of ``examples`` in ``order``."""
    for start in range(0, len(order), batch_size):
        yield collator([examples[i] for i in order[start : start + batch_size]])


@torch.no_grad()
def predict(model: nn.Module, dataset, collator: Collator, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Logits (or regression outputs) and labels for every example of ``dataset``, in order.

    Under ``torchrun`` every rank must call this: each predicts its shard, and all get the whole result.
    """
    world = current_world()
    was_training = model.training
    model.eval()
    examples = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    device = next(model.parameters(), torch.empty(0)).device  # a graph in ONNX Runtime has no parameters: CPU
    logits, labels = [], []
    for batch in iterate_batches(examples, world.shard(range(len(examples))), batch_size, collator):
        batch = {k: v.to(device) for k, v in batch.items()}
        labels.append(batch.pop("labels").cpu().numpy())
        logits.append(model(**batch).logits.float().cpu().numpy())
    model.train(was_training)
    mine = [np.concatenate(parts) if parts else np.zeros((0,)) for parts in (logits, labels)]  # a shard may be empty
    return world.gather_arrays(*mine)


def evaluate(model: nn.Module, dataset, collator: Collator, metrics: Sequence[str], batch_size: int = 128) -> dict[str, float]:
    """The task's metrics on ``dataset``."""
    preds, labels = predict(model, dataset, collator, batch_size)
    return compute_metrics(list(metrics), preds, labels)


def evaluate_splits(model: nn.Module, bundle: DataBundle, collator: Collator, batch_size: int = 128) -> dict[str, dict[str, float]]:
    """The task's metrics on the dev split and, when the data has one, the test split: what reports compare."""
    splits = {"dev": bundle.dev, "test": bundle.test}
    return {name: evaluate(model, split, collator, bundle.task.metrics, batch_size)
            for name, split in splits.items() if split is not None}
