"""A linear + cross-entropy point: the settings that determine one set of inputs, validated.

The problem is loss = CE(hidden [N, D] @ weight [V, D]^T (+ bias [V]), targets [N]) with
class-index targets. Its settings reuse the first family's where they mean the same thing:
`batch_size` is the tokens N, `num_classes` the vocabulary V, `logit_scale` the logits' standard
deviation (harness/linear_cross_entropy/inputs.py), and the loss options (`ignore_fraction`,
`ignore_index`, `label_smoothing`, `z_loss`, `softcap`, `class_weights`, `reduction`) are the
declared once for both families and checked by the same code (harness/loss/declared.py), with
the same formulas (harness/loss/options.py); `hidden_size` is D and `bias` adds a bias [V] to
the layer. The targets are always class indices (the `targets` setting is cross-entropy's and
is read only to refuse a kind other than hard; the schema's default, soft, reads as hard, as
Hydra keeps no record of what was set; rows hold `hard`). `logits` is not read: zipf is a construction
on given logits (ranks shuffled per row), and these logits are H W^T, a product of rank D that
the harness does not choose entry by entry, so `logits=zipf` is refused with one line
(harness/loss/settings.py, refuse_unread).

A variant receives the options it declares as keyword arguments; their names here are the
first family's but for the class weights, `class_weight` (a variant's second positional
argument is already called `weight`), and the bias, `bias`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from harness.loss import declared
from harness.loss.point import LOGITS_FIELDS, OptionedPoint, class_index_settings
from harness.loss.settings import SettingError, optional, positive

FAMILY_NAME = "linear_cross_entropy"
# The settings this family reads beyond the common ones (harness/loss/settings.py, COMMON): the
# layer's, `targets` (to refuse any kind but hard; soft, the schema's default, reads as hard), and
# its loss options.
READS = frozenset({"hidden_size", "bias", "targets", *(o.name for o in declared.read_by(FAMILY_NAME))})


class _Point(OptionedPoint):
    """One validated point: everything that determines the inputs. Its fields: batch_size (N
    tokens), hidden_size (D), num_classes (V), dtype, logit_scale (the logits' std: inputs.py
    says how the weight and bias share it), device, seed, one per option this family reads
    (harness/loss/declared.py), then `bias` (the layer adds a bias [V]) and `targets` (always
    hard: the column the first family's rows share)."""

    FAMILY_NAME = FAMILY_NAME

    @property
    def family(self) -> Any:
        """The family that measures this point (harness/family.py)."""
        from harness.linear_cross_entropy import FAMILY  # the package imports this module

        return FAMILY

    @property
    def required_options(self) -> frozenset[str]:
        """The keyword arguments a variant must honour here, `bias` among them when the layer
        has one; the plain loss without a bias needs none."""
        return super().required_options | ({"bias"} if self.bias else set())

    def label(self) -> str:
        """One line for progress and logs."""
        return (
            f"N={self.batch_size} V={self.num_classes} D={self.hidden_size}{' bias' if self.bias else ''} "
            f"{self.dtype} scale={self.logit_scale:g} {self.device} seed={self.seed}{self.options_label()}"
        )


Point = declared.point_class(
    "Point",
    FAMILY_NAME,
    _Point,
    [LOGITS_FIELDS[0], ("hidden_size", int), *LOGITS_FIELDS[1:], ("seed", int)],
    after=[("bias", bool, field(default=False)), ("targets", str, field(default="hard"))],
)


def point(cfg: Any) -> Point:
    """Check the point settings of a composed config (DictConfig, dataclass or dict)."""
    common = class_index_settings(cfg, FAMILY_NAME)
    d = positive(cfg, "hidden_size", 1)
    bias = optional(cfg, "bias", False)
    if not isinstance(bias, bool):
        raise SettingError(f"bias={bias!r} is not allowed: use true or false")
    return Point(**common, hidden_size=d, bias=bias)
