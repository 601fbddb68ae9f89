"""Each loss option declared once, as data.

An option is a setting of the run (`label_smoothing=0.1`), a column of every row, and, where a
point uses it, a keyword argument the variant must declare it honours (harness/registry.py,
`options=`); a variant that does not gets an `unsupported` row, never a silently different
loss. From these declarations come:

  the schema's fields and their defaults    harness/config.py
  the rows' columns and the values older    harness/vocabulary.py (OPTION_DEFAULTS),
  files load with                           harness/results.py (SCHEMA)
  the checks of a point's settings          `parse`
  the keyword arguments a point requires    `required`
  which settings each family reads          `read_by` (a setting no family of the run reads
                                            is refused: harness/loss/settings.py)

What an option does to the float64 reference is the `reference` line here and, in full, the
family's reference module (harness/cross_entropy/reference.py's docstring holds the formulas).

Torch-free: compare and the report read the vocabulary without a measuring stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional

from harness.loss.settings import INT_LIMIT, SettingError, is_int, is_number, number

CE, LINEAR, VP = "cross_entropy", "linear_cross_entropy", "vocab_parallel_cross_entropy"
LOGITS = ("normal", "zipf")
CLASS_WEIGHTS = ("none", "seeded", "signed")
REDUCTIONS = ("mean", "sum", "none")


class Context(NamedTuple):
    """What an option's check may depend on besides its own value."""

    num_classes: int
    targets: str  # soft | hard (a family with class indices only passes hard)
    family: str


@dataclass(frozen=True)
class Option:
    name: str  # the setting, and the rows' column
    default: Any  # the schema's default: the plain loss
    annotation: Any  # its type in the schema (Hydra rejects a value of another type)
    column: str  # the rows' arrow type: string | int64 | float64
    # (value, context) -> the point's value, or SettingError with one line
    parse: Callable[[Any, Context], Any]
    # family -> the keyword argument a variant declares to honour this option there ("": the
    # family reads the setting, but no variant is asked about it). The keys are the families
    # that read it.
    kwargs: Mapping[str, str]
    summary: str  # what the setting does, for a reader of the docs
    reference: str  # what it does to the float64 reference
    # what a variant's keyword argument means (the registries list it: harness/registry.py)
    kwarg_doc: str = ""
    # the point's value -> whether a variant must honour `kwargs[family]` at this point
    on: Callable[[Any], bool] = lambda v: False
    # the point's value as the rows hold it (a given weight list is "given"; no cap is 0)
    to_column: Callable[[Any], Any] = lambda v: v
    # (the point's value, all its option values) -> the value of `kwargs[family]` a variant
    # receives (no cap: None; the share of ignored rows asks for ignore_index's value). The
    # class weights' is the drawn tensor, which the family passes itself.
    to_kwarg: Callable[[Any, Mapping[str, Any]], Any] = lambda v, values: v

    @property
    def row_default(self) -> Any:
        """The value rows hold when the option is off; older files load with it."""
        return self.to_column(self.default)

    def read_by(self, family: str) -> bool:
        return family in self.kwargs


def _logits(v: Any, ctx: Context) -> str:
    if v not in LOGITS:
        raise SettingError(f"logits={v!r} is not allowed: use {' or '.join(LOGITS)}")
    return v


def _logit_offset(v: Any, ctx: Context) -> float:
    if not is_number(v):
        raise SettingError(f"logit_offset={v!r} is not allowed: use a finite number (0: none)")
    return float(v)


def _hard_only(name: str, v: Any, on: bool, ctx: Context, why: str) -> Any:
    """`v`, or the refusal of a setting that is on with probability targets, saying why."""
    if on and ctx.targets != "hard":
        raise SettingError(f"{name}={v:g} needs targets=hard: {why}")
    return v


def _mask_fraction(v: Any, ctx: Context) -> float:
    f = number(v, "mask_fraction", 0, 1, True)
    why = "a probability target on a masked class makes F.cross_entropy's 0 * -inf a NaN"
    return _hard_only("mask_fraction", f, f > 0, ctx, why)


def _pad_vocab_to(v: Any, ctx: Context) -> int:
    if not is_int(v) or not 0 <= v < INT_LIMIT:
        raise SettingError(f"pad_vocab_to={v!r} is not allowed: use an integer >= 0 (0: no padding)")
    why = "a probability target of 0 on a padded class makes F.cross_entropy's 0 * -inf a NaN"
    return _hard_only("pad_vocab_to", v, v > 1, ctx, why)


def _spatial_size(v: Any, ctx: Context) -> int:
    if not is_int(v) or not 0 <= v < INT_LIMIT:
        raise SettingError(f"spatial_size={v!r} is not allowed: use an integer >= 0 (0: logits [B, C])")
    why = "the soft targets' own (N, C, d) layout is not drawn"
    return _hard_only("spatial_size", v, v > 0, ctx, why)


def _micro_batches(v: Any, ctx: Context) -> int:
    if not is_int(v) or not 1 <= v < INT_LIMIT:
        raise SettingError(f"micro_batches={v!r} is not allowed: use an integer >= 1 (1: one call)")
    return _hard_only("micro_batches", v, v > 1, ctx, "num_items_in_batch counts the kept tokens")


def _target_confidence(v: Any, ctx: Context) -> float:
    f = number(v, "target_confidence", 0, 1, True)
    return _hard_only("target_confidence", f, f > 0, ctx, "it sets the target class's logit")


def _ignore_fraction(v: Any, ctx: Context) -> float:
    f = number(v, "ignore_fraction", 0, 1, True)
    why = "probability targets have no ignored class (F.cross_entropy takes ignore_index with class indices)"
    return _hard_only("ignore_fraction", f, f > 0, ctx, why)


def _ignore_index(v: Any, ctx: Context) -> int:
    """Any integer, in the classes or outside them, as torch allows (its own tests ignore class
    1, 2 and (C-1)//2; Liger's 0, 1, 2 and 42). In the classes, the rows whose drawn target
    happens to be it are ignored too: a kernel that tests `y < 0` for "ignored" is then wrong."""
    if not is_int(v) or abs(v) >= INT_LIMIT:
        raise SettingError(f"ignore_index={v!r} is not allowed: use an integer (PyTorch's default is -100)")
    return v


def _together(values: Mapping[str, Any], ctx: Context) -> None:
    """The checks of two options at once, after each alone. An ignore_index inside the classes
    ignores rows whatever the share asked for, so it is asked of the variants (and refused to
    those that do not take it) only with ignore_fraction > 0: alone it is refused, never read by
    the reference and not by the variants."""
    if values.get("target_confidence", 0.0) > 0 and values.get("logits") == "zipf":
        raise SettingError(
            "target_confidence needs logits=normal: zipf's hard targets are drawn from the model's softmax"
        )
    masks = [
        f"{k}={values[k]:g}"
        for k, on in (("mask_fraction", 0.0), ("pad_vocab_to", 1))
        if values.get(k, on) > on
    ]
    if masks and values.get("label_smoothing", 0.0) > 0:
        raise SettingError(
            f"{masks[0]} needs label_smoothing=0: smoothing puts mass on every class, "
            "and a masked class's log-probability is -inf (F.cross_entropy's loss is inf)"
        )
    if values.get("micro_batches", 1) > 1 and values.get("spatial_size", 0):
        raise SettingError(
            f"micro_batches={values['micro_batches']} needs spatial_size=0: the micro-batches "
            "are cut from the rows of logits [B, C]"
        )
    if values.get("micro_batches", 1) > 1 and (
        values.get("reduction", "mean") != "mean" or values.get("class_weights", "none") != "none"
    ):
        raise SettingError(
            f"micro_batches={values['micro_batches']} needs reduction=mean and class_weights=none: "
            "num_items_in_batch replaces the mean's divisor with the batch's count of kept tokens"
        )
    index, share = values.get("ignore_index"), values.get("ignore_fraction", 0.0)
    if index is not None and 0 <= index < ctx.num_classes and not share > 0:
        raise SettingError(
            f"ignore_index={index} is inside the classes 0..{ctx.num_classes - 1}: it needs "
            "ignore_fraction > 0 (and targets=hard), which asks the variants to honour it"
        )


def _softcap(v: Any, ctx: Context) -> float:
    """The cap, or 0.0 for none (the config's null): a point is hashable and its rows never null."""
    if v is not None and (not is_number(v) or v <= 0):
        raise SettingError(f"softcap={v!r} is not allowed: use a finite number > 0, or null (no cap)")
    return float(v or 0.0)


def _class_weights(w: Any, ctx: Context) -> str | tuple[float, ...]:
    """none | seeded | signed | a list of num_classes finite numbers (kept as a tuple: a Point is
    hashable). The rows record a given list as "given". Zero and negative weights, as torch
    allows them (its OpInfo samples draw U[-9, 9)), are the first family's: the linear family's
    tolerance has no term for a weighted mean whose denominator cancels."""
    signed_ok = ctx.family == CE
    if isinstance(w, str) and w in CLASS_WEIGHTS and (signed_ok or w != "signed"):
        return w
    c = ctx.num_classes
    allowed = (
        f"use none, seeded, signed, or a list of {c} finite numbers"
        if signed_ok
        else f"use none, seeded, or a list of {c} finite numbers > 0 (signed weights: family=cross_entropy)"
    )
    if isinstance(w, str) or not hasattr(w, "__len__"):
        raise SettingError(f"class_weights={w!r} is not allowed: {allowed}")
    values = list(w)
    if len(values) != c:
        raise SettingError(f"class_weights has {len(values)} values for num_classes={c}: {allowed}")
    for i, v in enumerate(values):
        if not is_number(v) or (v <= 0 and not signed_ok):
            raise SettingError(f"class_weights[{i}]={v!r} is not allowed: {allowed}")
    return tuple(float(v) for v in values)


def _reduction(v: Any, ctx: Context) -> str:
    if v not in REDUCTIONS:
        raise SettingError(f"reduction={v!r} is not allowed: use {', '.join(REDUCTIONS)}")
    return v


# In the order of the rows' columns and of the checks (a config with two bad settings names the
# first of these).
OPTIONS: tuple[Option, ...] = (
    Option(
        "logits",
        "normal",
        str,
        "string",
        _logits,
        {CE: ""},  # the linear family's logits are H W^T, not drawn row by row
        "the logits' distribution: normal (logit_scale * N(0, 1)) or zipf (LLM-like rows)",
        "none: it changes the inputs, not the loss",
    ),
    Option(
        "logit_offset",
        0.0,
        float,
        "float64",
        _logit_offset,
        {CE: ""},
        "a common offset added to every logit after the scale, before rounding: softmax and the "
        "loss do not change in exact arithmetic, but a formula that does not subtract the row's "
        "max overflows or cancels (PyTorch PR #195829), and the rounding of the logits grows with it",
        "none: it changes the inputs (the reference reads them as rounded), not the loss",
    ),
    Option(
        "mask_fraction",
        0.0,
        float,
        "float64",
        _mask_fraction,
        {CE: ""},
        "share of each row's logits set to -inf (masked or padded tokens), at classes drawn per row "
        "(never the target), in [0, 1); hard targets only",
        "none: it changes the inputs (a -inf logit has probability 0 and gradient 0), not the loss",
    ),
    Option(
        "pad_vocab_to",
        0,
        int,
        "int64",
        _pad_vocab_to,
        {CE: ""},
        "the logits' width padded up to a multiple of this with -inf columns (0 or 1: none), as "
        "vocabularies are padded to 64 or 128; num_classes stays the real vocabulary; hard targets",
        "none: the padded classes are masked (probability 0, gradient 0), never a target",
    ),
    Option(
        "spatial_size",
        0,
        int,
        "int64",
        _spatial_size,
        {CE: ""},  # whether a variant takes the layout is its `spatial` declaration (registry.py)
        "the logits handed over as (B/d, C, d) and the targets as (B/d, d), F.cross_entropy's form "
        "for a sequence or image of d positions per sample (PyTorch #85791), d dividing batch_size "
        "(0: logits [B, C]); the same B rows, so the references and columns are those of [B, C]; "
        "hard targets",
        "none: the B = (B/d) d rows are the problem; only their layout changes",
    ),
    Option(
        "target_confidence",
        0.0,
        float,
        "float64",
        _target_confidence,
        {CE: ""},
        "the target's probability in every row, in [0, 1) (0: as drawn): its logit set to "
        "logit(p) + the lse of the others, before rounding; 0.999 makes confident rows, where a "
        "gradient (p_y - 1)/B cancels; hard targets, normal logits",
        "none: it changes the inputs, not the loss",
    ),
    Option(
        "ignore_fraction",
        0.0,
        float,
        "float64",
        _ignore_fraction,
        {CE: "ignore_index", LINEAR: "ignore_index", VP: "ignore_index"},
        "share of rows whose hard target is ignore_index, in [0, 1)",
        "those rows add nothing, and leave the mean's divisor",
        kwarg_doc="rows whose class index equals it add nothing, and leave the mean's divisor",
        on=lambda v: v > 0,
        to_kwarg=lambda v, values: values["ignore_index"],
    ),
    Option(
        "ignore_index",
        -100,
        int,
        "int64",
        _ignore_index,
        {CE: "", LINEAR: "", VP: ""},  # asked for through ignore_fraction, which puts it in the targets
        "the class index of an ignored row: any integer; inside the classes it needs ignore_fraction > 0, "
        "and rows drawn with it as their target are ignored too",
        "rows whose target equals it add nothing",
    ),
    Option(
        "label_smoothing",
        0.0,
        float,
        "float64",
        lambda v, ctx: number(v, "label_smoothing", 0, 1, False),
        {CE: "label_smoothing", LINEAR: "label_smoothing", VP: "label_smoothing"},
        "epsilon in [0, 1]: the target gets 1 - epsilon, and epsilon is spread over all C classes",
        "q = (1 - eps) target + eps / C (times the class weights)",
        kwarg_doc="epsilon: the target gets 1 - epsilon, and epsilon is spread over all C classes",
        on=lambda v: v > 0,
    ),
    Option(
        "z_loss",
        0.0,
        float,
        "float64",
        lambda v, ctx: number(v, "z_loss", 0, float("inf"), False),
        {CE: "z_loss", LINEAR: "z_loss", VP: "z_loss"},
        "+ z_loss * lse^2 per (non-ignored) row, PaLM's auxiliary loss; 1e-4 is the usual value",
        "+ z_loss * lse_b^2 per kept row, and 2 z_loss lse_b p_b in its gradient",
        kwarg_doc="+ z_loss * lse^2 per (non-ignored) row, PaLM's auxiliary loss",
        on=lambda v: v > 0,
    ),
    Option(
        "softcap",
        None,
        Optional[float],
        "float64",
        _softcap,
        {CE: "softcap", LINEAR: "softcap", VP: "softcap"},
        "logits -> softcap * tanh(logits / softcap) before the loss (null: no cap; Gemma-2: 30)",
        "the loss of the capped logits, and the chain rule through tanh",
        kwarg_doc="logits -> softcap * tanh(logits / softcap) before the loss (None: no cap)",
        on=lambda v: v > 0,
        to_column=lambda v: float(v or 0.0),
        to_kwarg=lambda v, values: v or None,
    ),
    Option(
        "class_weights",
        "none",
        Any,
        "string",
        _class_weights,
        {
            CE: "weight",
            LINEAR: "class_weight",
            VP: "weight",
        },  # linear: a variant's `weight` is the classifier's
        "none | seeded (a positive [C] vector from the seed) | signed (uniform in [-9, 9) from the seed, "
        "as torch's own samples; cross_entropy only) | [w_0, .., w_C-1]",
        "each row's loss times its target's weight; a weighted mean divides by their sum",
        kwarg_doc="[C] class weights; a weighted mean divides by the summed weights of the rows' targets",
        on=lambda v: v != "none",
        to_column=lambda v: "given" if isinstance(v, tuple) else v,
        to_kwarg=lambda v, values: None,  # the family passes the weights as drawn (a tensor)
    ),
    Option(
        "micro_batches",
        1,
        int,
        "int64",
        _micro_batches,
        {CE: "num_items_in_batch"},
        "gradient accumulation: the rows cut into this many micro-batches, one call each with "
        "num_items_in_batch = the batch's kept rows, the losses summed (1: one call); hard targets, "
        "reduction=mean, no class weights",
        "none: the sum of the micro-batches' sums over the batch's kept rows is the batch's mean",
        kwarg_doc="the kept tokens of the whole batch (transformers' num_items_in_batch): return this "
        "micro-batch's summed loss divided by it; None: the plain loss",
        on=lambda v: v > 1,
        to_kwarg=lambda v, values: None,  # the family passes the count, which the targets decide
    ),
    Option(
        "reduction",
        "mean",
        str,
        "string",
        _reduction,
        {CE: "reduction", LINEAR: "reduction", VP: "reduction"},
        "mean | sum | none (none: the [B] per-row losses, differentiated with 1, 1.25, 1.5, 1.75, ...)",
        "the per-row losses reduced as F.cross_entropy's; none keeps them",
        kwarg_doc="mean | sum | none (none: the [B] per-row losses, differentiated with 1, 1.25, 1.5, "
        "1.75, ... per row)",
        on=lambda v: v != "mean",
    ),
)
BY_NAME = {o.name: o for o in OPTIONS}


def read_by(family: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if o.read_by(family))


def variant_kwargs(family: str) -> dict[str, str]:
    """The keyword arguments a variant of `family` can declare, and what each means."""
    return {o.kwargs[family]: o.kwarg_doc for o in read_by(family) if o.kwargs[family]}


def parse(get: Callable[[str, Any], Any], family: str, num_classes: int, targets: str) -> dict[str, Any]:
    """The checked values of the options `family` reads; `get(name, default)` reads a setting."""
    ctx = Context(num_classes, targets, family)
    values = {o.name: o.parse(get(o.name, o.default), ctx) for o in read_by(family)}
    _together(values, ctx)
    return values


def required(values: Mapping[str, Any], family: str) -> frozenset[str]:
    """The keyword arguments a variant must honour at a point with these option values."""
    return frozenset(o.kwargs[family] for o in read_by(family) if o.kwargs[family] and o.on(values[o.name]))


def kwarg_values(values: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Each keyword argument a variant of `family` may declare, with its value at a point whose
    option values are `values` (the class weights' None: the family passes the drawn tensor)."""
    return {o.kwargs[family]: o.to_kwarg(values[o.name], values) for o in read_by(family) if o.kwargs[family]}


def point_class(name: str, family: str, base: type, fields: list, after: list = ()) -> type:
    """A family's frozen Point dataclass: `fields` (name, type), one field per option the family
    reads (holding the value rows record when it is off), then `after` (name, type, field()).
    Generated, so that a new declaration is a field of every Point that reads it with no edit
    there; `base` holds the methods."""
    options = [(o.name, Any, dataclasses.field(default=o.row_default)) for o in read_by(family)]
    cls = dataclasses.make_dataclass(name, [*fields, *options, *after], bases=(base,), frozen=True)
    cls.__module__, cls.__qualname__ = base.__module__, name  # pickles as <module>.<name>
    return cls


def columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """Option values as the rows hold them; an option the point's family does not read holds
    its row default."""
    return {o.name: o.to_column(values[o.name]) if o.name in values else o.row_default for o in OPTIONS}
