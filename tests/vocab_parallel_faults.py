"""Vocabulary-parallel variants that fail on purpose, one rank at a time, for the fault tests
(tests/vocab_parallel_cross_entropy/test_vocab_parallel.py): a rank that raises, one that dies,
one that hangs, and rank 0 itself raising. Every other rank runs the correct loss, so each
failure meets the others inside a collective, as a real one would."""

from __future__ import annotations

import os
import time

from harness.vocab_parallel_cross_entropy.variants.megatron import megatron


def raises_on_rank_1(logits, targets, shard):
    if shard.rank == 1:
        raise ValueError("rank 1's own error")
    return megatron(logits, targets, shard)


def dies_on_rank_1(logits, targets, shard):
    if shard.rank == 1:
        os._exit(3)
    return megatron(logits, targets, shard)


def hangs_on_rank_1(logits, targets, shard):
    if shard.rank == 1:
        time.sleep(600)
    return megatron(logits, targets, shard)


def raises_on_rank_0(logits, targets, shard):
    if shard.rank == 0:
        raise ValueError("rank 0's own error")
    return megatron(logits, targets, shard)


for _fn in (raises_on_rank_1, dies_on_rank_1, hangs_on_rank_1, raises_on_rank_0):
    _fn.harness_targets = {"hard"}


def writes_on_rank_1(logits, targets, shard):
    """Scales rank 1's shard in place after using it: right once, and every later caller of
    that rank gets other logits."""
    loss = megatron(logits, targets, shard)
    if shard.rank == 1:
        with __import__("torch").no_grad():
            logits.mul_(2.0)
    return loss


writes_on_rank_1.harness_targets = {"hard"}
