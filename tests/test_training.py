"""The training loop's data order: deterministic per (seed, epoch), complete, and length-grouped."""

from __future__ import annotations

import random

from pruneformer.training import epoch_batches


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
