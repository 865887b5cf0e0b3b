"""The training loop's data order: deterministic per (seed, epoch), complete, and length-grouped."""

from __future__ import annotations

import random

import torch

from pruneformer.train.loop import epoch_batches


def test_epoch_batches_cover_every_example_once_and_are_reproducible():
    rng = random.Random(0)
    lengths = [rng.randint(3, 64) for _ in range(1003)]
    for grouped in (False, True):
        batches = epoch_batches(lengths, 32, seed=3, epoch=1, group_by_length=grouped)
        assert sorted(i for b in batches for i in b) == list(range(1003))
        assert len(batches) == -(-1003 // 32)
        assert batches == epoch_batches(lengths, 32, seed=3, epoch=1, group_by_length=grouped)
        assert batches != epoch_batches(lengths, 32, seed=3, epoch=2, group_by_length=grouped)


def test_grouping_by_length_cuts_padding():
    rng = random.Random(1)
    lengths = [rng.randint(3, 64) for _ in range(3200)]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = padded(epoch_batches(lengths, 32, 0, 0, group_by_length=False))
    grouped = padded(epoch_batches(lengths, 32, 0, 0, group_by_length=True))
    assert grouped < 0.65 * plain


def test_phases_of_one_schedule_share_one_lr_curve_with_no_step_at_zero():
    from pruneformer.train.loop import lr_factor, make_scheduler, schedule_spans

    spans, total = schedule_spans([0.5, 1.5], steps_per_epoch=10)
    assert spans == [(0, 5), (5, 20)] and total == 20
    warmup = int(0.1 * total)
    seen = []
    for first, end in spans:  # each phase has its own optimizer and scheduler, as in the pipeline
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=1.0)
        scheduler = make_scheduler(optimizer, first, total, 0.1)
        for _ in range(first, end):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    assert seen == [lr_factor(g, total, warmup) for g in range(total)]
    assert min(seen) > 0 and seen[warmup - 1] == 1.0 and seen == sorted(seen[:warmup]) + seen[warmup:]
    assert all(a >= b for a, b in zip(seen[warmup:], seen[warmup + 1:]))  # decays to the very end


def test_a_later_phase_continues_the_data_order_instead_of_replaying_it():
    from pruneformer.train.loop import epoch_batches

    lengths = list(range(100))
    first = epoch_batches(lengths, 8, seed=0, epoch=0, group_by_length=True, stream=1)
    second = epoch_batches(lengths, 8, seed=0, epoch=1, group_by_length=True, stream=1)
    dense = epoch_batches(lengths, 8, seed=0, epoch=0, group_by_length=True, stream=0)
    assert first != second and first != dense
    assert sorted(i for b in first for i in b) == list(range(100))
    assert first == epoch_batches(lengths, 8, seed=0, epoch=0, group_by_length=True, stream=1)  # pure function
