"""The cross-entropy variants: every implementation of the loss on materialised logits.

A variant is a function `fn(logits, targets) -> scalar mean loss`, registered where it is
defined (harness/registry.py says what each field means):

    from harness.cross_entropy.variants import register

    @register("my_loss", targets={"soft", "hard"}, description="why it is interesting")
    def my_loss(logits, targets): ...

Every module of this package is imported below, so a new file here is the only edit a new
variant needs: tests, sweeps, the theory and the reports iterate over the registry.

Target kinds: "hard" targets reach `fn` as int64 class indices [B]; "soft" targets as
probabilities [B, C] in the logits' dtype. A variant that accepts only "soft" still runs on
hard points: it receives the one-hot rows (built outside the timed region).

Loss options: a variant registered with `options={"ignore_index", "label_smoothing", ...}`
(the keyword arguments of harness/loss/declared.py, `variant_kwargs`) receives each of them as a keyword
argument at every point, with F.cross_entropy's meaning, whether spelled out as F.cross_entropy's
are or taken together, as the built-in variants take them (harness/loss/options.py `Keywords`):

    def my_loss(logits, targets, *, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                softcap=None, weight=None, reduction="mean"): ...

    def my_loss(logits, targets, **options: Unpack[Keywords]):
        opts = LossOptions.of_keywords(options)  # those not given at their defaults

A point that turns on an option the variant does not declare gives an `unsupported` row.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from torch import Tensor

from harness.cross_entropy.mechanisms import MECHANISMS
from harness.loss import declared
from harness.registry import ALL_DEVICES, ALL_TARGETS, Registry, Variant

__all__ = [
    "ALL_DEVICES",
    "ALL_TARGETS",
    "REGISTRY",
    "LossFn",
    "Variant",
    "get",
    "names",
    "register",
    "resolve",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

REGISTRY = Registry(
    "cross_entropy",
    signature="two arguments (logits, targets) and return the mean loss",
    mechanisms=MECHANISMS,
    options=declared.variant_kwargs("cross_entropy"),
)
register = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get
resolve = REGISTRY.resolve

# Registration order is the order of tables and the colour of each variant in figures: the
# native op first, the notebook's formulas next, and `external` last (it registers only the
# libraries that import). Modules not listed here (a new file) come before `external`.
_ORDER = ("native", "notebook", "compiled", "composed", "chunked", "online", "shifted", "triton_fused")
_LAST = "external"

_found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
for _module in [
    *[m for m in _ORDER if m in _found],
    *[m for m in _found if m not in (*_ORDER, _LAST)],
    _LAST,
]:
    importlib.import_module(f"{__name__}.{_module}")
