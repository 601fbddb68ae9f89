"""The loss options of one call, as the float64 references, the kernels and the variants take them.

The settings that turn them on are declared in harness/loss/declared.py; this is their value
for one call, shared by every family's reference, the Triton kernels and the variants that take
their keywords together (`Keywords`, `LossOptions.of_keywords`).

`LossOptions()` (every field at its default) is F.cross_entropy's defaults: the plain loss. The
reference (harness/cross_entropy/reference.py) computes the optioned loss exactly to float64;
its docstring holds the formulas. In short, per non-ignored row b, with z' = softcap(z)
(`capped`: a masked class, z = -inf, stays masked):

    loss_b = sum_c q_bc (lse'_b - z'_bc) + z_loss * lse'_b^2
    hard target y:  q_c = (1 - eps) w_y [c = y] + (eps / C) w_c
    soft target t:  q_c = w_c ((1 - eps) t_c + eps / C)

and the reduction (mean | sum | none) as F.cross_entropy's for everything but z-loss, which
PyTorch lacks and which follows Liger-Kernel's `lse_square_scale`.

No validation of user settings beyond asserts: the config layer validates, with `check` to say
what is wrong in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, TypedDict

try:  # for a variant's `**options: Unpack[Keywords]`: typing's from Python 3.11, else torch's own dependency
    from typing import Unpack as Unpack
except ImportError:  # pragma: no cover
    from typing_extensions import Unpack as Unpack

import torch
from torch import Tensor

from harness.loss.declared import BY_NAME, REDUCTIONS

# The declared options that shape the inputs rather than the loss: the logits' distribution,
# the share of ignored rows (the targets hold ignore_index), and the class weights (drawn, then
# passed as `weight`).
_INPUT_OPTIONS = frozenset({"logits", "ignore_fraction", "class_weights"})


def capped(z: Tensor, softcap: float | None) -> Tensor:
    """softcap * tanh(z / softcap), with a masked class (z = -inf) left at -inf; z itself
    without a cap. The formula alone gives a masked class -softcap, and with it probability mass
    that no class of the vocabulary has: padded lanes of a V = 65537 vocabulary took nearly half
    of it in Unsloth PR #10616. The mask says the class does not exist, whatever the cap."""
    if softcap is None:
        return z
    return torch.where(torch.isneginf(z), z, softcap * torch.tanh(z / softcap))


class Keywords(TypedDict, total=False):
    """The loss options as a variant receives them: keyword arguments under F.cross_entropy's
    names, plus z_loss and softcap (harness/loss/declared.py `variant_kwargs` lists each
    family's). The runner passes every option the variant declares (`register(options=...)`),
    at the point's value whether or not it is on, and no other, so a variant may take them as
    `**options: Unpack[Keywords]` and read them with `LossOptions.of_keywords`, or spell them out
    in its signature as F.cross_entropy does: the call is the same."""

    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None
    weight: Tensor | None  # [C] class weights in the logits' dtype
    class_weight: Tensor | None  # the same, in the linear family (its `weight` is the layer's)
    reduction: str
    num_items_in_batch: int | None  # cross_entropy: the whole batch's kept rows (gradient accumulation)
    bias: Tensor | None  # linear_cross_entropy: F.linear's bias (an input, declared as an option)


# Keywords that are not the loss's own options: the caller reads them (harness/loss/options.py
# `LossOptions.of_keywords` leaves them out).
CALLER_KEYWORDS = frozenset({"num_items_in_batch", "bias"})


@dataclass(frozen=True)
class LossOptions:
    ignore_index: int = -100  # hard targets equal to it contribute nothing (not applied to soft targets)
    label_smoothing: float = 0.0  # epsilon in [0, 1]: target -> (1 - eps) target + eps / C
    z_loss: float = 0.0  # PaLM z-loss coefficient: + z_loss * lse_b^2 per (non-ignored) row
    softcap: float | None = None  # Gemma-2: logits -> softcap * tanh(z / softcap) before the loss
    weight: Tensor | None = None  # [C] positive class weights (float64 on the logits' device)
    reduction: str = "mean"  # mean | sum | none
    # (name, value) of each option declared beyond these fields (harness/loss/declared.py), for
    # a family's reference to read with `value(name)`: a new option needs no field here
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of_point(cls, values: Mapping[str, Any], weight: Tensor | None) -> LossOptions:
        """The options of a point whose option values (a Point's `option_values()`) are `values`,
        with its class weights as drawn (float64)."""
        own = {f.name for f in fields(cls)}
        given = {k: v for k, v in values.items() if k in own}
        if "softcap" in given:
            given["softcap"] = given["softcap"] or None  # a point's 0.0 is no cap
        extra = tuple((k, v) for k, v in values.items() if k not in own and k not in _INPUT_OPTIONS)
        return cls(**given, weight=weight, extra=extra)

    @classmethod
    def of_keywords(cls, options: Mapping[str, Any]) -> LossOptions:
        """The options of one variant call from its keywords (`Keywords`), the ones not given
        at their defaults: the linear family's class_weight is the loss's weight, and
        CALLER_KEYWORDS are left to the caller. An unknown keyword is a TypeError, as in a
        signature that spells them out."""
        unknown = sorted(set(options) - set(Keywords.__annotations__))
        if unknown:  # `extra` too: a field of this class, not a keyword a variant receives
            raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
        given = {k: v for k, v in options.items() if k not in CALLER_KEYWORDS}
        if "class_weight" in given:
            given["weight"] = given.pop("class_weight")
        return cls(**given)

    def torch_keywords(self, dtype: torch.dtype | None = None) -> dict[str, Any]:
        """F.cross_entropy's own keywords (z_loss and the softcap are not among them), the class
        weights cast to `dtype` where given: it refuses weights of another dtype than the logits',
        and the cast of a rounded weight to a wider dtype is exact."""
        weight = self.weight if self.weight is None or dtype is None else self.weight.to(dtype)
        return dict(
            weight=weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
        )

    def value(self, name: str) -> Any:
        """The value of option `name` (a field, or one in `extra`); its declared default if unset."""
        if name in {f.name for f in fields(self)}:
            return getattr(self, name)
        return dict(self.extra).get(name, BY_NAME[name].default)

    def _extra_on(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.extra if v != BY_NAME[k].row_default]

    def _key(self) -> tuple:
        w = None if self.weight is None else tuple(self.weight.tolist())
        return (self.ignore_index, self.label_smoothing, self.z_loss, self.softcap, w, self.reduction) + (
            self.extra,
        )

    def __eq__(self, other: object) -> bool:  # by value, weight included (a Tensor's == is elementwise)
        return isinstance(other, LossOptions) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def ignores(self, targets: Tensor | None) -> bool:
        """Whether some hard target equals ignore_index (soft targets: never; F.cross_entropy
        refuses any ignore_index but the default with probability targets)."""
        if targets is None or targets.is_floating_point() or targets.dim() != 1:
            return False
        return bool((targets == self.ignore_index).any().item())

    def active(self, targets: Tensor | None = None) -> tuple[str, ...]:
        """The names of the options that make this loss differ from the plain one, in field
        order. ignore_index counts only when some target (of `targets`) equals it."""
        names = []
        if self.ignores(targets):
            names.append("ignore_index")
        if self.label_smoothing != 0.0:
            names.append("label_smoothing")
        if self.z_loss != 0.0:
            names.append("z_loss")
        if self.softcap is not None:
            names.append("softcap")
        if self.weight is not None:
            names.append("weight")
        if self.reduction != "mean":
            names.append("reduction")
        return tuple(names) + tuple(k for k, _ in self._extra_on())

    @property
    def plain(self) -> bool:
        """Every option but ignore_index at its default (ignore_index depends on the targets)."""
        return not self.active()

    def describe(self) -> str:
        """One line: 'plain' or the active settings, e.g. 'label_smoothing=0.1 softcap=30 weight[C=8]'."""
        parts = []
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.label_smoothing != 0.0:
            parts.append(f"label_smoothing={self.label_smoothing:g}")
        if self.z_loss != 0.0:
            parts.append(f"z_loss={self.z_loss:g}")
        if self.softcap is not None:
            parts.append(f"softcap={self.softcap:g}")
        if self.weight is not None:
            parts.append(f"weight[C={self.weight.numel()}]")
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction}")
        parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._extra_on()]
        return " ".join(parts) if parts else "plain"

    def check(self, num_classes: int) -> str | None:
        """None if these options are allowed with `num_classes` classes, else a one-line message
        naming the setting and what is allowed."""
        eps = self.label_smoothing
        if not (isinstance(eps, (int, float)) and 0.0 <= eps <= 1.0):
            return f"label_smoothing={eps!r} is not allowed: use a number in [0, 1]"
        zl = self.z_loss
        if not (isinstance(zl, (int, float)) and math.isfinite(zl) and zl >= 0.0):
            return f"z_loss={zl!r} is not allowed: use a finite number >= 0"
        cap = self.softcap
        if cap is not None and not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0.0):
            return f"softcap={cap!r} is not allowed: use a finite number > 0, or None for no cap"
        w = self.weight
        if w is not None:
            if not isinstance(w, Tensor) or w.dim() != 1 or w.numel() != num_classes:
                shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
                return (
                    f"weight of shape {shape} is not allowed: use {num_classes} class weights (one per class)"
                )
            if not w.is_floating_point():
                return f"weight of dtype {w.dtype} is not allowed: use a floating-point tensor"
            bad = int((~(torch.isfinite(w) & (w > 0))).sum().item())
            if bad:
                return (
                    f"weight has {bad} entries that are not finite and > 0: use positive finite class weights"
                )
        if self.reduction not in REDUCTIONS:
            return f"reduction={self.reduction!r} is not allowed: use one of {', '.join(REDUCTIONS)}"
        if not isinstance(self.ignore_index, int):
            return f"ignore_index={self.ignore_index!r} is not allowed: use an integer"
        return None
