"""One row's time verdict from its two runs' samples: slower, faster, same, or ambiguous with the
reason (harness/compare.py joins the runs and calls `time_verdict` per row).

The rule reads only the samples and the evidence beside them (Timed): nothing here loads files
or knows the rows' columns, so it can be tested on samples drawn in memory
(tests/compare/test_compare_time.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.measure.contention import WAITS, reason_names

if TYPE_CHECKING:
    from harness.compare import Thresholds  # only its time_factor is read

# Fewer samples a side than this and a row's time cannot be judged at all; from 3 to
# QUARTILE_SAMPLES - 1 each side's interval is its whole range (min to max), from
# QUARTILE_SAMPLES on its lower half (10th percentile to median). The timer's default min_reps
# (7) gives the latter.
MIN_SAMPLES = 3
QUARTILE_SAMPLES = 5

# How far a lone row (harness/compare.py `_lone`: its variant's other rows did not move with it)
# must separate, as a power of the factor: x2.2 at the default 1.3. In A/A tries on this 2-core
# machine single uncorroborated rows separated by up to x1.84 (an `online` fwd_bwd row) and
# x2.03 (three variants' rows at one point, with the point's calibration unmoved); x1.45 was
# the largest before the host's drift grew. A real slowdown shows at its variant's other points
# too, or is larger than that.
LONE_POWER = 3


@dataclass(frozen=True)
class Timed:
    """One run's timing of one row, as compare reads it.

    samples     wall seconds (or, on the relative basis, ratios to the native op)
    own         wall less the calling thread's run-queue wait, per sample: the time the call
                took of its own, other work's share removed; only where the row ran with one
                intra-op thread on a CPU, where that thread does all the work (None elsewhere)
    calib       the point's calibration (harness/measure/calibration.py), seconds, or None
    contention  why the row was marked as timed under contention ('' when it was not)
    rel         its samples over the native op's, round by round, where it is not the native op
    drift       max(after / before, before / after) of the point's calibration (1: steady)"""

    samples: np.ndarray
    own: np.ndarray | None = None
    calib: float | None = None
    contention: str = ""
    rel: np.ndarray | None = None
    drift: float = 1.0  # the calibration's change within the point, as a factor >= 1


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The range a run's undisturbed samples lie in: from the 10th percentile to the median from
    QUARTILE_SAMPLES samples on, the whole range below that. The lower half, not the
    interquartile range: other work only ever adds time, so disturbed samples sit above the
    undisturbed ones, and up to half of them may be disturbed without moving this interval. (A
    0.16 ms call run under Hydra on this machine had a quarter of its samples at 2-3x its
    median, stalls nothing on the machine accounted for: its interquartile range spanned x1.3.)"""
    if len(samples) >= QUARTILE_SAMPLES:
        lo, hi = np.percentile(samples, [10, 50])
        return float(lo), float(hi)
    return float(samples.min()), float(samples.max())


def separation(base: np.ndarray, new: np.ndarray) -> float:
    """How far apart two runs' intervals lie, as a factor: > 1 when new's lies wholly above
    base's (new's low end over base's high end), < 1 when wholly below (base's low end over new's
    high end, inverted), 1 when they overlap."""
    (blo, bhi), (nlo, nhi) = interval(base), interval(new)
    if nlo > bhi:
        return nlo / bhi if bhi > 0 else math.inf
    if blo > nhi:
        return nhi / blo if blo > 0 else 0.0
    return 1.0


def _beyond(sep: float, factor: float, slower: bool) -> bool:
    return sep > factor if slower else sep < 1 / factor


def time_verdict(
    base: Timed | None,
    new: Timed | None,
    th: Thresholds,
    point_change: float | None = None,
    lone: bool = False,
    point_mates: tuple[int, int] | None = None,
) -> tuple[str, float, str]:
    """(verdict, median ratio new/base, reason) for one row's two timings, nvbench-compare's way:
    judged from the samples' intervals, with an honest "don't know".

      slower    the intervals separate by more than the factor (new's low end above factor x
                base's high end; with 3 samples a side that is new's minimum above factor x
                base's maximum), and the separation holds on every other evidence there is:
                after dividing each run's samples by its calibration (a slower machine slows
                the calibration too), in wall time less the run-queue wait where one thread does
                all the work (other work that took the core adds wait, not work), against the
                native op timed interleaved at the same point (the median of the row's relative
                samples moved beyond the factor too: a machine that slowed slowed both), and for
                the native op itself `point_change`, the other variants' change against it at
                its point. A row timed under contention
                other than waits for a core, or without the wait figures, is not judged. A
                `lone` row (its variant's other rows in that mode did not move the same way)
                is not judged when `point_mates` (moved, of) says most of the other variants at
                its point and mode moved the same way (the host slowed that point, not the
                variant: seen in an A/A try, three variants x2.0 at one point), and otherwise
                must separate by factor ** LONE_POWER: a whole row of one point can run 1.4-1.8x
                slower in one process than in another (the same code), and among hundreds of
                rows some will, while a real slowdown shows at its siblings or is large.
      faster    the same, the other way.
      same      the median ratio is within the factor and no separation beyond it.
      ambiguous anything else, with the reason: too few samples, a separation the other
                evidence does not bear out, or a median ratio beyond the factor whose samples
                overlap (too noisy to tell).
      n/a       no samples on either side (timing off, or the call failed)."""
    if base is None or new is None or not len(base.samples) or not len(new.samples):
        return "n/a", math.nan, ""
    b, n = base.samples, new.samples
    mb, mn = float(np.median(b)), float(np.median(n))
    ratio = mn / mb if mb > 0 else math.inf
    fewest = min(len(b), len(n))
    if fewest < MIN_SAMPLES:
        return "ambiguous", ratio, f"few samples: {len(b)} and {len(n)}, {MIN_SAMPLES} a side needed"
    sep = separation(b, n)
    f = th.time_factor
    if not (_beyond(sep, f, True) or _beyond(sep, f, False)):
        if 1 / f <= ratio <= f:
            return "same", ratio, ""
        return (
            "ambiguous",
            ratio,
            (
                f"spread: medians x{ratio:.3g} apart but the samples overlap within x{f:g} "
                f"(median over 10th percentile x{_spread(b):.2f} base, x{_spread(n):.2f} new)"
            ),
        )
    slower = sep > 1
    word = "slower" if slower else "faster"
    if lone and point_mates is not None and _point_moved(*point_mates):
        moved, of = point_mates
        return (
            "ambiguous",
            ratio,
            (
                f"point: x{sep:.3g} apart, with {moved} of the {of} other variants at its point moving "
                f"the same way and no other row of this variant: the host changed speed at that point"
            ),
        )
    lone_factor = f**LONE_POWER
    if lone and not _beyond(sep, lone_factor, slower):
        return (
            "ambiguous",
            ratio,
            (
                f"lone: x{sep:.3g} apart, but no other row of this variant and mode moved beyond "
                f"x{f:g}; alone it needs x{lone_factor:.3g}"
            ),
        )
    if base.calib and new.calib:
        cal = separation(b / base.calib, n / new.calib)
        if not _beyond(cal, f, slower):
            return (
                "ambiguous",
                ratio,
                (
                    f"calibration: x{sep:.3g} apart, x{cal:.3g} after dividing by each run's "
                    f"calibration ({base.calib * 1e6:.3g} and {new.calib * 1e6:.3g} us): the machine's speed"
                ),
            )
    why = _contention_check(base, new, sep, f, slower)
    if why:
        return "ambiguous", ratio, why
    if base.rel is not None and new.rel is not None and len(base.rel) and len(new.rel):
        # The medians' ratio, not the intervals': a ratio of two samples spreads as both do, and a
        # real 1.5x slowdown then separated by x1.1-x1.2 only. The question here is only whether
        # the whole point moved (the ratio stays near 1) or this variant did.
        rel = float(np.median(new.rel)) / float(np.median(base.rel))
        if not _beyond(rel, f, slower):
            return (
                "ambiguous",
                ratio,
                (
                    f"relative: x{sep:.3g} apart alone, x{rel:.3g} against the native op timed beside it: "
                    "the whole point moved"
                ),
            )
    if point_change is not None and not _beyond(point_change, f, slower):
        return (
            "ambiguous",
            ratio,
            (
                f"relative: x{ratio:.3g} alone, but the other variants at its point moved "
                f"x{1 / point_change:.3g} against it: the whole point moved"
            ),
        )
    return word, ratio, ""


def _point_moved(moved: int, of: int) -> bool:
    """Whether the other variants at a point moved together: at least two, and at least half."""
    return of >= 2 and moved >= max(2, math.ceil(of / 2))


def _contention_check(base: Timed, new: Timed, sep: float, f: float, slower: bool) -> str:
    """Why the contention marks leave a separation unexplained ('' when they do not). Waits for
    a core are taken out where the wait figures are (Timed.own); a drifting calibration allows
    a separation beyond factor x the drift; anything else (throttling, load without the wait
    figures) leaves the row unjudged."""
    names = reason_names(base.contention) | reason_names(new.contention)
    if not names:
        return ""
    has_own = base.own is not None and new.own is not None
    unexplained = names - {"drift"} - (set(WAITS) if has_own else set())
    if unexplained:
        return f"contention: {new.contention or base.contention}"
    if names & set(WAITS):
        own = separation(base.own, new.own)
        if not _beyond(own, f, slower):
            return f"contention: x{sep:.3g} apart, x{own:.3g} without the time spent waiting for a core"
    if "drift" in names:
        slack = max(base.drift, new.drift)
        if not _beyond(sep, f * slack, slower):
            return (
                f"contention: x{sep:.3g} apart, but the calibration drifted x{slack:.2f} within a point: "
                f"needs x{f * slack:.3g}"
            )
    return ""


def _spread(samples: np.ndarray) -> float:
    lo, hi = interval(samples)
    return hi / lo if lo > 0 else math.inf
