"""The harness's own bytes at a point: the byte model of the harness itself, next to the
variants' (traffic.py). What it holds while a variant runs (`resident_bytes`, the rows'
`harness_bytes` to the byte) and what it adds for a moment while it draws the inputs, makes the
references and compares a result (`transient_bytes`, block temporaries, never [B, C] float64).

With L the logits' bytes, e their element size:

  resident   L (the logits) + the targets (8 B for indices; L for soft ones) + the class
             weights (C e, and once in float64, 8 C, shared by both references)
             + per reference: its per-row losses (8 B) and, for hard targets, the rows it keeps
               (a bool a row), and its gradient (8 B C) where that is at most 16 MiB
               (reference._HOLD_BELOW_BYTES); one reference at fp64, where the rounded inputs
               are the draw; the verdict's (on the rounded inputs) also the per-entry bound
               beside a kept gradient (8 B C) and, for hard targets, the target of each row (8 B)
             + the guard (harness/measure/isolation.py): a copy of each input under 1 MiB, else
               its row and column sums in int64, 8 (rows + cols)
             + at spatial_size = d, the logits again as (B/d, C, d), the tensor the variants
               receive (the guard's then, seen as [B/d C, d])
  transient  a block of the draw in float64 (and its rounded copy), twice with soft targets;
               where a CPU walk makes the blocks ahead (inputs.made_ahead), one more float64 block
               of the logits (the one their producer holds) and two more of soft targets (theirs
               and the one it holds for the logits' producer: harness/loss/ahead.py)
             + up to REFERENCE_TEMPORARIES blocks of the reference's float64 temporaries
             + the element-wise verdict's sums, 24 (B + C)
             + at spatial_size = d, the variant's gradient copied back to rows [B, C] (L)

So the harness holds about L plus O(B + C), where it held 9.5 L (fp32) and more before the
references streamed (docs/operations.md, The harness's own footprint). The point's peak is its
resident bytes plus the larger of the transient bytes and the variant's own peak.
"""

from __future__ import annotations

import importlib

from harness.cross_entropy.point import Point
from harness.loss.errors import block_elements
from harness.measure.isolation import COPY_BELOW_BYTES

# The modules whose block sizes set the transient bytes (read at each call; the package's own
# `reference` name is the function, not the module).
_DRAW = importlib.import_module("harness.cross_entropy.inputs")
_REFERENCE = importlib.import_module("harness.cross_entropy.reference")
_STREAMED = importlib.import_module("harness.cross_entropy.streamed")

# The most float64 temporaries of one reference block alive at once, over the options
# (measured with harness/measure/memory.py's tracker, tests/cross_entropy/test_harness_footprint.py: 9 with
# hard targets and no options, 13 soft, 17 with smoothing, z-loss, softcap and weights).
REFERENCE_TEMPORARIES = 17


def _guarded(rows: int, cols: int, elem: int) -> int:
    """The guard's bytes for one input seen as [rows, cols] of `elem`-byte elements."""
    size = rows * cols * elem
    return size if size < COPY_BELOW_BYTES else 8 * (rows + cols)


def resident_bytes(point: Point) -> int:
    """What the harness holds while the point's variants run (module docstring)."""
    b, c = point.batch_size, point.width
    e = point.torch_dtype.itemsize
    soft = point.targets == "soft"
    logits = b * c * e
    targets = logits if soft else 8 * b
    weighted = point.class_weights != "none"
    weights = c * e + 8 * c if weighted else 0
    per_reference = 8 * b + (0 if soft else b)
    kept = 8 * b * c <= _REFERENCE._HOLD_BELOW_BYTES
    per_reference += 8 * b * c if kept else 0
    references = per_reference * (1 if point.dtype == "fp64" else 2)
    # the verdict's reference (the rounded inputs'): its per-entry bound beside a kept gradient,
    # and the targets' entries the element-wise verdict reads (hard)
    references += (8 * b * c if kept else 0) + (0 if soft else 8 * b)
    d = point.spatial_size
    guard = _guarded(b // d * c, d, e) if d else _guarded(b, c, e)
    guard += _guarded(b, c, e) if soft else _guarded(b, 1, 8)
    guard += _guarded(c, 1, e) if weighted else 0
    spatial = logits if d else 0
    return logits + targets + weights + references + guard + spatial


def _block_elements(rows: int, cols: int, elements: int) -> int:
    return min(rows, max(1, elements // cols)) * cols


def transient_bytes(point: Point, threads: int | None = None) -> int:
    """The most the harness adds for a moment beyond its resident bytes (module docstring).
    threads: the torch threads of the walks (None: this process's now), which decide whether a
    CPU walk makes its blocks ahead."""
    b, c = point.batch_size, point.width
    e = point.torch_dtype.itemsize
    ahead = _DRAW.made_ahead(point, threads)
    per_block = _block_elements(b, c, _DRAW._BLOCK_ELEMENTS)
    draw = per_block * (8 * (2 if ahead else 1) + e)
    if point.targets == "soft":
        draw += per_block * (8 * (3 if ahead else 1) + e)
    # a reference's blocks: its own size on the point's device, within one block of the draw
    block = min(block_elements(_STREAMED._BLOCK_ELEMENTS, point.device), _DRAW._BLOCK_ELEMENTS)
    temporaries = _block_elements(b, c, block) * 8 * REFERENCE_TEMPORARIES
    # the element-wise verdict's sums (harness/loss/errors.py Entrywise): error, reference and
    # bound, squared, per row and per class, in float64
    elementwise = 3 * 8 * (b + c)
    spatial = b * c * e if point.spatial_size else 0  # the gradient back in rows (__init__.py _assess)
    return draw + temporaries + elementwise + spatial


def peak_bytes(point: Point, variant_peak: int) -> int:
    """The point's peak: the harness's resident bytes plus the larger of its transient bytes
    and the variant's own peak (`variant_peak`, e.g. a row's peak_mem_bytes)."""
    return resident_bytes(point) + max(transient_bytes(point), variant_peak)
