"""The issue's family table, cell by cell, on tiny random models of every family pruneformer describes: the
calibrated one-shot methods (Wanda, SparseGPT) prune each family to 2:4 layer by layer, and ``PruningCallback``
prunes each inside a real ``transformers.Trainer``. (N:M ``prune``, shrinking, SPP and export per family:
``tests/compress/test_families.py``.)"""

from __future__ import annotations

import pytest
import torch
import transformers as T
from family_fixtures import BUILDERS, family_batch, tiny_family_model
from torch.utils.data import Dataset

from pruneformer import SRSTEPruner, parse_pattern
from pruneformer.core.targets import resolve_targets
from pruneformer.methods.sparsegpt import SparseGPTPruner
from pruneformer.methods.wanda import WandaPruner
from pruneformer.train.calibration import prune_layerwise
from pruneformer.train.trainer_callback import PruningCallback

#: families without a cut, built here: fused Q/K/V (GPT-2's Conv1D, ModernBERT's Wqkv), ALBERT's shared layer
EXTRA = {
    "gpt2": lambda: T.GPT2ForSequenceClassification(T.GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4,
                                                                 n_positions=32, num_labels=3, pad_token_id=0)),
    "modernbert": lambda: T.ModernBertForSequenceClassification(T.ModernBertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        num_labels=3, pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)),
    "albert": lambda: T.AlbertForSequenceClassification(T.AlbertConfig(
        vocab_size=100, hidden_size=64, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=3)),
    "deberta-v2": lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        num_labels=3)),
}
ALL = sorted(BUILDERS) + sorted(EXTRA)


def model_of(name: str):
    if name in BUILDERS:
        return tiny_family_model(name)
    torch.manual_seed(0)
    return EXTRA[name]().eval()


def batch_of(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    return family_batch(name if name in BUILDERS else "bert", seed)


def satisfied(model) -> bool:
    pattern = parse_pattern("2:4")
    return all(pattern.satisfied(t.linear_weight) for t in resolve_targets(model))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_one_shot_prunes_every_family(name, method):
    model = model_of(name)
    with torch.no_grad():
        dense = model(**batch_of(name)).logits
    pruner = WandaPruner("2:4") if method == "wanda" else SparseGPTPruner("2:4")
    pruner.attach(model, resolve_targets(model))
    masks = prune_layerwise(model, pruner, [batch_of(name, seed) for seed in (2, 3, 4)])
    assert satisfied(model) and len(masks) == len(resolve_targets(model))
    assert all(float(m.float().mean()) == 0.5 for m in masks.values())
    with torch.no_grad():
        pruned = model(**batch_of(name)).logits
    assert torch.isfinite(pruned).all() and (pruned - dense).abs().max() > 1e-5


class Rows(Dataset):
    """The family's batch as rows, with labels, for the Trainer's default collator."""

    def __init__(self, name: str) -> None:
        batch = {k: torch.cat([batch_of(name, s)[k] for s in (2, 3, 4, 5)]) for k in batch_of(name)}
        self.rows = [{**{k: v[i] for k, v in batch.items()}, "labels": torch.tensor(i % 3)}
                     for i in range(len(next(iter(batch.values()))))]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


@pytest.mark.parametrize("name", ALL)
def test_trainer_callback_prunes_every_family(name, tmp_path):
    model = model_of(name).train()
    callback = PruningCallback(SRSTEPruner("2:4", lambda_w=2e-4))
    args = T.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1,
                               learning_rate=1e-3, use_cpu=True, report_to=[], save_strategy="no",
                               remove_unused_columns=False, disable_tqdm=True)
    T.Trainer(model=model, args=args, train_dataset=Rows(name), callbacks=[callback]).train()
    assert satisfied(model)
