"""The linear + cross-entropy variants: every way of computing CE(hidden @ weight^T, targets).

A variant is `fn(hidden, weight, targets, *, ignore_index=-100) -> scalar mean loss`, with
hidden [N, D] and weight [V, D] in the point's dtype and targets [N] int64 class indices,
registered where it is defined (harness/registry.py says what each field means):

    from harness.linear_cross_entropy.variants import register

    @register("my_lce", options={"ignore_index"}, description="why it is interesting")
    def my_lce(hidden, weight, targets, *, ignore_index=-100): ...

The runner differentiates the loss with respect to hidden and weight (autograd.grad), so a
variant with a custom backward returns both gradients from it. Every module of this package is
imported below: a new file here is the only edit a new variant needs. `ignore_index` is the one
loss option of this family; a variant that does not declare it gives `unsupported` rows at a
point with ignored rows (never a silently different loss).
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.registry import Registry

REGISTRY = Registry(
    "linear_cross_entropy",
    signature="three arguments (hidden [N, D], weight [V, D], targets [N]) and return the mean loss",
    mechanisms={},  # no failure mechanisms catalogued yet (the first family's theory is about given logits)
    options={"ignore_index": "rows whose target is this index are left out of the loss and the mean"},
    arity=3,
)
register = REGISTRY.register

# Registration order is the order of tables: the materialised forms first (the native op is
# `materialized`), then the fused ones, `external` last (only the libraries that are installed).
_ORDER = ("native", "compiled", "chunked")
_LAST = "external"

_found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
for _module in [
    *[m for m in _ORDER if m in _found],
    *[m for m in _found if m not in (*_ORDER, _LAST)],
    _LAST,
]:
    importlib.import_module(f"{__name__}.{_module}")
