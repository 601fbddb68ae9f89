"""A problem family: what one kind of loss brings to the shared runner, rows, reports and compare.

There are three, chosen by the `family` setting (harness/job.py): cross-entropy on materialised
logits (harness/cross_entropy/), fused linear + cross-entropy (harness/linear_cross_entropy/),
and vocabulary-parallel cross-entropy on torch.distributed (harness/vocab_parallel_cross_entropy/:
rank 0 is the measuring process, so its call is what the runner times).
Each is a package that builds a `Family`: its own points (a `PointLike`), inputs, float64
reference, variant signature and byte model, measured by the same runner (harness/runner.py)
into the same rows (harness/results.py), whose `family` column names it. Families share the
loss core (harness/loss/: the options, settings, errors, class weights) and the Triton kernel
(harness/kernel/), and never import each other. Another is one package with a FAMILY, plus
its line in harness/job.py's FAMILIES (or none: `family=my_pkg.my_family` loads it by import
path).

The runner's order for each (variant, mode) is generic: feed the inputs, call, assess against
the reference, check the inputs bit for bit, measure memory, time. Everything that depends on
what the inputs *are* is one of these hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from torch import Tensor

from harness.measure.isolation import Feed
from harness.registry import Registry, Variant
from harness.vocabulary import NATIVE


class PointLike(Protocol):
    """What the shared layers (runner, labels, progress, plan, rows) read of a family's point.
    Everything else on a point is its family's own: the hooks below receive the point whole.
    A point is a frozen dataclass (hashable; the scan replaces its logit_scale and seed)."""

    batch_size: int  # rows (tokens): the sizes progress and the plan weigh by
    num_classes: int  # classes (vocabulary)
    dtype: str  # harness/dtypes.py DTYPES
    logit_scale: float
    device: str  # cpu | cuda | cuda:N
    seed: int
    targets: str  # soft | hard: which variants resolve at the point (Registry.resolve)

    @property
    def family(self) -> "Family": ...

    @property
    def required_options(self) -> frozenset[str]:
        """The keyword arguments a variant must declare to run here."""
        ...

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them: every vocabulary.POINT_COLUMNS name."""
        ...

    def label(self) -> str:
        """One line for progress and logs."""
        ...


# (scalar loss, the family's gradient or None in fwd mode): cross-entropy's is the [B, C]
# gradient of the logits, linear_cross_entropy's the pair (dH, dW). Only `assess` reads it.
Outputs = tuple[Tensor, Any]


@dataclass(frozen=True)
class Family:
    name: str
    registry: Registry
    # config -> the job's validated point, a PointLike (SettingError with one line on a bad
    # setting); harness/loss/settings.py scans it over the job's seeds and logit scales
    point: Callable[[Any], Any]
    # point -> its inputs, drawn in float64 and rounded once to the point's dtype
    make_inputs: Callable[[Any], Any]
    # (point, inputs) -> (reference on the rounded inputs, reference on the unrounded draw)
    references: Callable[[Any, Any], tuple[Any, Any]]
    # inputs -> {name: tensor} that no variant may write into (checked after each variant)
    guarded: Callable[[Any], dict[str, Tensor]]
    # (variant, point) -> "" if the variant runs at the point, else why not (an `unsupported` row)
    unsupported: Callable[[Variant, Any], str]
    # (inputs, variant, point) -> what the variant is called with
    feed: Callable[[Any, Variant, Any], Feed]
    # (fn, feed, mode) -> one repetition's work, returning Outputs
    call: Callable[[Callable, Feed, str], Callable[[], Outputs]]
    # (outputs, (ref, ref_total), point) -> the accuracy columns and status of a row; ref_total
    # None: no total columns, and no element-wise ones (the runner's untimed native call reads
    # the verdict's norm-wise errors alone; a total may walk the draw again, 2.4 s at
    # B x C = 2^26 with soft targets on a CPU, and the per-entry bounds cost 0.35 s more there)
    assess: Callable[[Outputs, tuple[Any, Any], Any], dict[str, Any]]
    # (point, mode) -> the fewest bytes the mode must move (the byte model)
    bytes_moved: Callable[[Any, str], int]
    # (point, inputs, mode) -> a compute floor in seconds where the device has one worth timing, or None
    compute_floor_s: Callable[[Any, Any, str], float | None]
    # the settings it reads beyond those every family reads (harness/loss/settings.py, COMMON):
    # any other set away from its default is refused with one line (harness/job.py)
    reads: frozenset[str] = frozenset()
    # the variant every other one's error is divided by (err_vs_native): the family's plain op
    native: str = NATIVE
    # (fn, feed) -> a fwd_bwd repetition whose gradient is the second of two backwards of one
    # loss (retain_graph=True on the first), judged by `assess` like the first: a backward that
    # writes into what it saved (a gradient scaled in place) is right once and wrong twice
    # (Unsloth #5002, QuACK PR #209). None: the family's rows are not checked for it.
    second_backward: Callable[[Callable, Feed], Callable[[], Outputs]] | None = None
    # (point, inputs) -> (inputs the loss is invariant to: the classes permuted, the logits
    # shifted; their (ref, ref_total); what was done, in words). Each fwd_bwd row is called once
    # more on them and judged by `assess` against their own reference: a bug that depends on
    # where a class sits or on the logits' level can pass one and not the other. None: not checked.
    metamorphic: Callable[[Any, Any], tuple[Any, tuple[Any, Any], str]] | None = None
    # point -> the inputs alone, for restoring them after a variant wrote into them; None:
    # make_inputs (which may make more on the way: cross_entropy's makes a reference)
    remake_inputs: Callable[[Any], Any] | None = None
