"""Deliberately faulty user variants, named by import path in tests (tests.fault_variants:NAME)."""

import torch
import torch.nn.functional as F

harness_both = {"soft", "hard"}


def raises(logits, targets):
    raise RuntimeError("this variant always fails")


def not_scalar(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")


def detached(logits, targets):
    return F.cross_entropy(logits.detach(), targets)


def out_of_memory(logits, targets):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")


def correct(logits, targets):
    return F.cross_entropy(logits, targets)


for _fn in (raises, not_scalar, detached, out_of_memory, correct):
    _fn.harness_targets = harness_both


def one_argument(logits):
    """Wrong signature: a variant takes (logits, targets)."""
    return logits.sum()
