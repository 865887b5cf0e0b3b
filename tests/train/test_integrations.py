"""PruningCallback in a real ``transformers.Trainer`` ends with exactly the masks of pruneformer's own loop.

Both runs start from the same tiny BERT, see the same batches in the same order (the Trainer gets
pruneformer's :func:`epoch_batches` as its batch sampler), use the same AdamW groups (the Trainer builds its
own optimizer with ``optim="adamw_torch"``; the callback adds the method's groups), the same linear schedule
and the same clipping. Dropout is off, so neither loop's random stream touches the numbers.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

from pruneformer import ADMMPruner, MaskedFineTuner, SRSTEPruner, compute_masks, parse_pattern
from pruneformer.core.targets import resolve_targets
from pruneformer.data import tokenize_bundle
from pruneformer.methods import MLPruner, SPPSearch
from pruneformer.runs.engine import prepare_data
from pruneformer.runs.recipe import DataConfig
from pruneformer.train.loop import TrainSettings, epoch_batches, train_phase
from pruneformer.train.trainer_callback import PruningCallback

BATCH, EPOCHS, LR = 16, 2.0, 1e-3


def make_method(kind: str, model):
    if kind == "admm":
        return ADMMPruner("2:4", rho=1e-2, interval=4)
    if kind == "admm-lr":  # needs each step's lr from the Trainer's optimizer
        return ADMMPruner("2:4", pull="lr", score="fisher", rho=30.0, interval=4)
    if kind == "srste":
        return SRSTEPruner("2:4", lambda_w=2e-4)
    if kind == "masked":
        targets = resolve_targets(model)
        return MaskedFineTuner("2:4", masks=compute_masks(parse_pattern("2:4"), {t.name: t.linear_weight for t in targets}))
    if kind == "mlpruning":
        return MLPruner(0.5, threshold_init=3.0, score_lr=0.2)
    return SPPSearch(nu=100.0, alpha=5.0, mask_optimizer="adamw", mask_lr=1e-2)


class SameBatches:
    """pruneformer's batches of an epoch, as a batch sampler the Trainer moves through epochs."""

    def __init__(self, lengths: list[int]) -> None:
        self.lengths, self.epoch = lengths, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        batches = epoch_batches(self.lengths, BATCH, 0, self.epoch, group_by_length=False)
        self.epoch += 1  # in case the Trainer does not call set_epoch
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / BATCH)


class PrunefomerOrderTrainer(Trainer):
    def get_train_dataloader(self):
        lengths = [len(x["input_ids"]) for x in self.train_dataset]
        return DataLoader(self.train_dataset, batch_sampler=SameBatches(lengths), collate_fn=self.data_collator)


@pytest.fixture(scope="module")
def task(tiny_model_dir, tiny_task):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = DataConfig(source=str(tiny_task["train"]), dev_file=str(tiny_task["dev"]), max_length=16)
    train = tokenize_bundle(prepare_data(config, 0), tokenizer, 16).train
    return model, tokenizer, train


@pytest.mark.parametrize("kind", ["admm", "admm-lr", "srste", "masked", "mlpruning", "spp"])
def test_trainer_callback_ends_with_the_masks_of_pruneformers_loop(kind, task, tmp_path):
    model, tokenizer, train = task
    collator = DataCollatorWithPadding(tokenizer)

    ours = copy.deepcopy(model)
    method = make_method(kind, ours)
    method.attach(ours, resolve_targets(ours))
    train_phase(ours, train, collator, TrainSettings(epochs=EPOCHS, lr=LR, batch_size=BATCH, warmup_ratio=0.0,
                                                      max_grad_norm=1.0, seed=0, group_by_length=False,
                                                      eval_each_epoch=False, progress=False, checkpoint_every=0),
                method=method)
    expected = method.finalize()

    theirs = copy.deepcopy(model)
    callback = PruningCallback(make_method(kind, theirs))  # attaches to the Trainer's model itself
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS,
                             learning_rate=LR, weight_decay=0.01, warmup_steps=0, lr_scheduler_type="linear",
                             max_grad_norm=1.0, optim="adamw_torch", seed=0, use_cpu=True, report_to=[],
                             save_strategy="no", logging_steps=4, remove_unused_columns=False, disable_tqdm=True)
    trainer = PrunefomerOrderTrainer(model=theirs, args=args, train_dataset=train, data_collator=collator,
                                     callbacks=[callback])
    trainer.train()

    assert trainer.state.global_step == math.ceil(EPOCHS * len(train) / BATCH)
    assert args.max_grad_norm == 1.0  # handed back after the run
    assert callback.masks.keys() == expected.keys()
    for name, mask in expected.items():
        assert torch.equal(callback.masks[name], mask), name
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(b, a), name  # bit-identical weights, not only masks
    logged = [entry for entry in trainer.state.log_history if any(k.startswith("pruning/") for k in entry)]
    assert len(logged) == len(callback.method.history) == len(method.history)
    if kind.startswith("admm"):  # one record per Z/U update (and the first), residuals as pruneformer's loop logged them
        assert len(logged) == 1 + trainer.state.global_step // 4
        for entry, record in zip(logged, method.history):
            assert entry["pruning/primal_residual"] == pytest.approx(record["primal_residual"], rel=1e-5)
    if kind in ("admm", "admm-lr", "srste", "masked"):
        pattern = parse_pattern("2:4")
        assert all(pattern.satisfied(t.module.weight.detach()) for t in resolve_targets(theirs))
