"""The linear + cross-entropy variants: every way of computing CE(hidden @ weight^T + bias, targets).

A variant is `fn(hidden, weight, targets, *, <the options it declares>) -> the loss`, with
hidden [N, D] and weight [V, D] in the point's dtype and targets [N] int64 class indices,
registered where it is defined (harness/registry.py says what each field means):

    from harness.linear_cross_entropy.variants import register

    @register("my_lce", options={"ignore_index", "bias"}, description="why it is interesting")
    def my_lce(hidden, weight, targets, *, ignore_index=-100, bias=None): ...

It returns the mean loss, or as `reduction` says when it declares it (a scalar for sum, the [N]
per-row losses for none). The runner differentiates the loss (the sum of the rows under none)
with respect to hidden, weight and the bias when there is one (autograd.grad), so a variant with
a custom backward returns each of those gradients from it. Every module of this package is
imported below: a new file here is the only edit a new variant needs.

The options are the loss options both families declare (harness/loss/declared.py, the same
semantics) under the same keyword names, but for the class weights, `class_weight` (`weight`
is the layer's), and with the layer's `bias` [V] (None at a point without one). A variant
receives every option it declares at every point, defaults included; a point that turns on
an option the variant does not declare gives an `unsupported` row (never a silently different
loss).
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.loss import declared
from harness.registry import Registry

REGISTRY = Registry(
    "linear_cross_entropy",
    signature="three arguments (hidden [N, D], weight [V, D], targets [N]) and return the loss",
    mechanisms={},  # no failure mechanisms catalogued yet (the first family's theory is about given logits)
    options={
        **declared.variant_kwargs("linear_cross_entropy"),
        "bias": "the layer's bias [V], added to the logits (None without one); differentiated too",
    },
    arity=3,
)
register = REGISTRY.register

# Registration order is the order of tables: the modules of _ORDER first (native.py holds the
# native op, `materialized`), then any other module alphabetically (fused.py, a new one), and
# `external` last (only the libraries that are installed).
_ORDER = ("native", "composed", "compiled", "chunked")
_LAST = "external"

_found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
for _module in [
    *[m for m in _ORDER if m in _found],
    *[m for m in _found if m not in (*_ORDER, _LAST)],
    _LAST,
]:
    importlib.import_module(f"{__name__}.{_module}")
