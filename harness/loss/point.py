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

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS; another
        family's at their defaults); weights given as a list are recorded as "given" (the list
        itself is in the sweep's _multirun.yaml)."""
        cols = {name: getattr(self, name, COLUMN_DEFAULTS.get(name)) for name in POINT_COLUMNS}
        return {**cols, **declared.columns(self.option_values()), "family": self.FAMILY_NAME}
