"""A row's accuracy status from its errors and their bounds: the same rule in every family."""

from __future__ import annotations

from typing import Iterable

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
