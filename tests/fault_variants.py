"""Deliberately faulty user variants, named by import path in tests (tests.fault_variants:NAME)."""

import sys

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


def exits_3(logits, targets):
    sys.exit(3)


def exits_0(logits, targets):
    sys.exit(0)


def interrupts_itself(logits, targets):
    raise KeyboardInterrupt


def scribbles(logits, targets):
    """Writes into its logits (as in-place kernels do) without declaring it."""
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        logits.mul_(2.0)
    return loss


def overwrites_by_design(logits, targets):
    """Writes into its logits after reading them, and says so: it must get a fresh copy."""
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        logits.zero_()
    return loss


overwrites_by_design.harness_overwrites_input = True

for _fn in (
    raises,
    not_scalar,
    detached,
    out_of_memory,
    correct,
    exits_3,
    exits_0,
    interrupts_itself,
    scribbles,
    overwrites_by_design,
):
    _fn.harness_targets = harness_both


def one_argument(logits):
    """Wrong signature: a variant takes (logits, targets)."""
    return logits.sum()


def hangs(logits, targets):
    import time

    time.sleep(3600)


_calls = {"n": 0}


def hangs_when_timed(logits, targets):
    """Right on its first calls (accuracy, memory), then hangs: the timed calls must stop too."""
    import time

    _calls["n"] += 1
    if _calls["n"] > 2:
        time.sleep(3600)
    return F.cross_entropy(logits, targets)


def scribbles_on_weights(logits, targets, weight=None):
    """Honours class weights, then halves them in place: every later weighted loss would move."""
    loss = F.cross_entropy(logits, targets, weight=weight)
    if weight is not None:
        with torch.no_grad():
            weight.mul_(0.5)
    return loss


scribbles_on_weights.harness_options = {"weight"}


def declares_what_it_cannot_take(logits, targets, *, label_smoothing=0.0):
    """Declares z_loss, which its signature has no place for: every call would be a TypeError."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


declares_what_it_cannot_take.harness_options = {"label_smoothing", "z_loss"}
