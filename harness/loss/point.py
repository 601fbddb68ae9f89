"""What every family's Point does with its loss options, whatever its other fields.

A family's Point is a frozen dataclass made by `declared.point_class`: the family's own fields,
then one per option it reads. This base holds the methods that read those option fields, so a
new declaration reaches the rows, the required keyword arguments and the variants' keyword
values of every family that reads it with no edit here or in the family.
"""

from __future__ import annotations

from typing import Any, ClassVar

from harness.loss import declared
from harness.vocabulary import COLUMN_DEFAULTS, POINT_COLUMNS


class OptionedPoint:
    FAMILY_NAME: ClassVar[str]  # the family's registry name, also the rows' `family`

    @property
    def torch_dtype(self) -> Any:
        from harness.dtypes import DTYPES  # torch: only once a point is measured

        return DTYPES[self.dtype]

    def option_values(self) -> dict[str, Any]:
        """The point's value of every option its family reads, by setting name."""
        return {o.name: getattr(self, o.name) for o in declared.read_by(self.FAMILY_NAME)}

    @property
    def required_options(self) -> frozenset[str]:
        """The keyword arguments a variant must honour to be measured at this point (the plain
        loss needs none)."""
        return declared.required(self.option_values(), self.FAMILY_NAME)

    def kwarg_values(self) -> dict[str, Any]:
        """Every option keyword a variant may declare, with this point's value (the class
        weights' None: the family passes the drawn tensor)."""
        return declared.kwarg_values(self.option_values(), self.FAMILY_NAME)

    def options_label(self) -> str:
        """' label_smoothing=0.1 spatial_size=8': the options away from their defaults, as the
        rows hold them, for the family's label (two points of a sweep over an option would
        otherwise print the same line); '' for the plain loss."""
        cols = declared.columns(self.option_values())
        on = [
            f"{o.name}={cols[o.name]:g}" if isinstance(cols[o.name], float) else f"{o.name}={cols[o.name]}"
            for o in declared.read_by(self.FAMILY_NAME)
            if cols[o.name] != o.row_default
        ]
        return "".join(f" {x}" for x in on)

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS; another
        family's at their defaults); weights given as a list are recorded as "given" (the list
        itself is in the sweep's _multirun.yaml)."""
        cols = {name: getattr(self, name, COLUMN_DEFAULTS.get(name)) for name in POINT_COLUMNS}
        return {**cols, **declared.columns(self.option_values()), "family": self.FAMILY_NAME}


# The fields of every family's Point that `logits_settings` checks, less the seed (each family
# puts its own fields among them: targets before the seed, the linear family's hidden_size second).
LOGITS_FIELDS = (
    ("batch_size", int),
    ("num_classes", int),
    ("dtype", str),
    ("logit_scale", float),
    ("device", str),
)


def logits_settings(cfg: Any) -> dict[str, Any]:
    """The checked settings every family's point has, as Point fields: batch_size, num_classes,
    dtype, logit_scale, seed and device."""
    from harness.config import validate_device  # the schema: not needed to read rows
    from harness.dtypes import DTYPES  # torch: only once a point is measured
    from harness.loss import settings
    from harness.loss.settings import get_setting, positive

    return {
        "batch_size": positive(cfg, "batch_size", 1),
        "num_classes": positive(cfg, "num_classes", 2),
        "dtype": settings.one_of(cfg, "dtype", DTYPES),
        "logit_scale": settings.scale(get_setting(cfg, "logit_scale"), "logit_scale"),
        "seed": settings.seed(get_setting(cfg, "seed"), "seed"),
        "device": validate_device(get_setting(cfg, "device")),
    }


def class_index_settings(cfg: Any, family: str) -> dict[str, Any]:
    """`logits_settings`, and one field per loss option `family` reads, for the families whose
    targets are class indices (linear_cross_entropy, vocab_parallel_cross_entropy). `targets`
    may only be hard; the schema's default, soft (the first family's), reads as hard, since Hydra
    keeps no record of whether it was set."""
    from harness.loss.settings import SettingError, optional

    out = logits_settings(cfg)
    targets = optional(cfg, "targets", "hard")
    if targets not in ("hard", "soft"):
        raise SettingError(f"targets={targets!r} is not allowed with family={family}: use hard")
    options = declared.parse(lambda k, dflt: optional(cfg, k, dflt), family, out["num_classes"], "hard")
    return {**out, **options}
