"""One function per figure of the report. Each takes a `Context` and returns a matplotlib
Figure, or a string saying why there is no data for it (never raises on a thin run).

Conventions shared by every figure: a title phrased as the question the figure answers,
units on every axis, variants in the fixed registry order with fixed colours
(`data.styles`), and variants whose formula is wrong drawn dashed and named "(wrong formula)".

The line figures (speed, throughput, memory, repeated softmax) are seaborn.objects plots drawn
onto a Figure the report makes: seaborn makes the panels and the one legend, beside the panels.
The others use matplotlib itself (each says why), their legend below the panels where they have
several. Nothing touches pyplot's global state: the report draws many figures in one
process, and the tests more.

This module names every figure in one place (what build.py and the tests read); they are drawn in
- plotting.py: what every figure shares (`Context`, the theme, legends, titles, `finish`),
- accuracy_figures.py: what each formula gets right: where it breaks (1), the failure boundary
  against C (2), the error heatmaps (3), repeated softmax (6), every row's status (7),
- cost_figures.py: what each variant costs against C: time per call (4), GB/s, peak memory (5).
"""

from __future__ import annotations

from harness.report.accuracy_figures import (
    FLATTENING_SLOPE,
    accuracy,
    boundary,
    boundary_variants,
    breaks,
    flattening,
    statuses,
)
from harness.report.cost_figures import MEMORY_DODGE, SPEED_LINES, memory, speed, throughput
from harness.report.plotting import Context, finish

__all__ = [
    "FLATTENING_SLOPE",
    "MEMORY_DODGE",
    "SPEED_LINES",
    "Context",
    "accuracy",
    "boundary",
    "boundary_variants",
    "breaks",
    "finish",
    "flattening",
    "memory",
    "speed",
    "statuses",
    "throughput",
]
