"""A row's accuracy status from its errors and their bounds: the same rule in every family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# The headroom over a family's error bound for what the bound leaves out, one value for every
# family, so that `inaccurate` means the same in each: each family's bound is the sum of the
# roundings a careful implementation in the dtype cannot avoid, and K times it is where a result
# stops being one (harness/cross_entropy/tolerance.py has the measured basis; the linear and
# vocabulary-parallel families' audits, in their docs, sit below it as well).
K_LOSS = 4.0
K_GRAD = 2.0
# The element-wise verdicts' headroom over the per-entry bounds (harness/loss/errors.py
# Entrywise): the gradient bound's terms taken entry by entry. `python scripts/verdict_audit.py`:
# the correct variants reach 0.56 of it (the rows of CPU fp16/bf16 softmax apart:
# docs/findings.md), and each bug of tests/local_bugs.py is flagged wherever its element-wise
# error is 8x the careful variants' (tests/cross_entropy/test_elementwise.py).
K_ENTRY = 2.0


@dataclass(frozen=True)
class Tolerance:
    """A point's bounds, K times a family's sum of unavoidable roundings."""

    loss: float  # relative error of the loss beyond which a result is `inaccurate`
    grad: float  # the same for the gradient (each of a family's gradients), norm-wise


# A relative tolerance from which the bound no longer tells right from wrong: at 0.5 a result
# half wrong passes, and past 2 a gradient of the wrong sign does (fp32 hard targets at
# logit_scale 1e7, C=68: the gradient bound is 4.19). A row judged against such a bound is
# `unjudged`, never `ok`; an error beyond even that bound is still `inaccurate`.
VACUOUS = 0.5


def status(
    nonfinite: bool, judged: Iterable[tuple[float | None, float | None]], local: float | None = None
) -> str:
    """nonfinite, inaccurate (an error above its bound, or an element-wise ratio above 1),
    unjudged (within bounds, one of them vacuous) or ok. `judged`: (relative error, its bound)
    pairs; a None error is not measured (a forward has no gradient). `local`: the worst
    element-wise error over its per-entry bound (harness/loss/errors.py Entrywise), None where
    it is not measured."""
    if nonfinite:
        return "nonfinite"
    pairs = [(e, t) for e, t in judged if e is not None and t is not None]
    if any(e > t for e, t in pairs) or (local is not None and local > 1.0):
        return "inaccurate"
    if any(t >= VACUOUS for _, t in pairs):
        return "unjudged"
    return "ok"
