"""The README's "your own training loop" example, run on the tiny model: the API a user drops in."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pruneformer import ADMMPruner, MaskedFineTuner, parse_pattern, resolve_targets


def test_readme_loop_with_admm_then_masked_finetune(tiny_model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tokenizer(["the film was good", "a dull and boring plot"], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0])
    targets = resolve_targets(model, exclude=["attn_out"])  # roles or regexes
    assert len(targets) == 2 * 5

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = ADMMPruner("2:4", rho=1e-2, interval=5)
    pruner.attach(model, targets)
    for step in range(20):
        pruner.before_forward(step)
        loss = model(**batch).loss
        loss.backward()
        pruner.after_backward(step)
        pruner.before_optimizer_step(step)   # after clipping, if you clip: ADMM's gradient-form penalty
        optimizer.step()
        optimizer.zero_grad()
        pruner.after_optimizer_step(step)
    masks = pruner.finalize()
    assert len(pruner.history) == 1 + 4  # one residual record per Z/U update, plus the initial one

    retrain = MaskedFineTuner("2:4", masks=masks)
    retrain.attach(model, targets)
    for step in range(5):
        model(**batch).loss.backward()
        retrain.after_backward(step)
        optimizer.step()
        optimizer.zero_grad()
        retrain.after_optimizer_step(step)
    pattern = parse_pattern("2:4")
    for target in targets:
        weight = target.module.weight.detach()
        assert pattern.satisfied(weight)
        assert torch.equal(weight != 0, masks[target.name] & (weight != 0))
    untouched = model.bert.encoder.layer[0].attention.output.dense.weight
    assert float((untouched == 0).float().mean()) == 0.0  # excluded layers stay dense
