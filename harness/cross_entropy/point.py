"""A cross-entropy point: the settings that determine one set of inputs, validated.

`point(cfg)` turns a composed config into a `Point` or raises `SettingError` with one line
naming the key and what is allowed; harness/loss/settings.py `scan_points` makes the job's list
of points from it (the one point, or one per (logit_scale, seed) of the `scan` lists).
"""

from __future__ import annotations

from typing import Any

from harness.loss import declared
from harness.loss.point import LOGITS_FIELDS, OptionedPoint, logits_settings
from harness.loss.settings import SettingError, get_setting, optional

TARGET_KINDS = ("soft", "hard")
# The settings this family reads beyond the common ones (harness/loss/settings.py, COMMON): a
# run that sets any other away from its default is refused (hidden_size, bias: the linear
# family's layer; this family's logits are given).
READS = frozenset({"targets", *(o.name for o in declared.read_by("cross_entropy"))})


class _Point(OptionedPoint):
    """One validated point of a sweep: everything that determines the inputs. Its fields:
    batch_size, num_classes, dtype, logit_scale, device, targets, seed, then one per option this
    family reads (harness/loss/declared.py; off by default: the plain mean cross-entropy on
    logit_scale * N(0, 1)), e.g. `softcap` 0.0 for no cap, `class_weights` none | seeded | the
    given [C] weights."""

    FAMILY_NAME = "cross_entropy"

    @property
    def family(self) -> Any:
        """The family that measures this point (harness/family.py)."""
        from harness.cross_entropy import FAMILY  # the package imports this module: import late

        return FAMILY

    @property
    def width(self) -> int:
        """The logits' columns: num_classes, padded up to a multiple of pad_vocab_to with -inf
        columns (the tensors a variant receives, and what the byte models count)."""
        m = self.pad_vocab_to
        return -(-self.num_classes // m) * m if m > 1 else self.num_classes

    def label(self) -> str:
        """One line for progress and logs."""
        return (
            f"B={self.batch_size} C={self.num_classes} {self.dtype} scale={self.logit_scale:g} "
            f"{self.targets} {self.device} seed={self.seed}{self.options_label()}"
        )


Point = declared.point_class(
    "Point", "cross_entropy", _Point, [*LOGITS_FIELDS, ("targets", str), ("seed", int)]
)


def point(cfg: Any) -> Point:
    """Check the point settings of a composed config (DictConfig, dataclass or dict)."""
    common = logits_settings(cfg)
    b = common["batch_size"]
    targets = get_setting(cfg, "targets")
    if targets not in TARGET_KINDS:
        raise SettingError(f"targets={targets!r} is not allowed: use soft or hard")
    options = declared.parse(
        lambda k, d: optional(cfg, k, d), "cross_entropy", common["num_classes"], targets
    )
    if options["micro_batches"] > b:
        raise SettingError(f"micro_batches={options['micro_batches']} is more than batch_size={b}")
    d = options["spatial_size"]
    if d and b % d:
        raise SettingError(
            f"spatial_size={d} does not divide batch_size={b}: the logits are (batch_size / d, C, d)"
        )
    return Point(**common, targets=targets, **options)
