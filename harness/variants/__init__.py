"""The variant registry: every cross-entropy implementation the harness can measure.

A variant is a function `fn(logits, targets) -> scalar mean loss` plus what it accepts.
Register one next to its function:

    @register("my_loss", targets={"soft", "hard"}, description="why it is interesting")
    def my_loss(logits, targets): ...

and import its module in `_FAMILIES` below. Tests, sweeps and reports iterate over the
registry, so that is the only edit a new variant needs.

Target kinds: "hard" targets reach `fn` as int64 class indices [B]; "soft" targets as
probabilities [B, C] in the logits' dtype. A variant that accepts only "soft" still runs on
hard points: it receives the one-hot rows (built outside the timed region).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor

from harness.config import SettingError

LossFn = Callable[[Tensor, Tensor], Tensor]

ALL_TARGETS = frozenset({"soft", "hard"})
ALL_DEVICES = frozenset({"cpu", "cuda"})


@dataclass(frozen=True)
class Variant:
    name: str                                  # stable id; the `variant` column in results
    fn: LossFn = field(repr=False)
    targets: frozenset[str] = ALL_TARGETS      # kinds `fn` takes natively (see module doc)
    devices: frozenset[str] = ALL_DEVICES      # device types it runs on
    stable: bool = True                        # False: known to break at large logit scales
    expected_wrong: str = ""                   # one line: why the formula itself is wrong
    description: str = ""
    setup: Callable[[LossFn], LossFn] | None = field(default=None, repr=False)  # e.g. compile
    overwrites_input: bool = False             # writes into its logits by design: a fresh copy
    #                                            before every call, outside the timed interval
    user: bool = False                         # named by import path on the command line

    def runs_on(self, targets: str, device: str) -> bool:
        """Whether this variant can run at a point with these targets and device."""
        device_type = device.split(":")[0]
        kind_ok = targets in self.targets or (targets == "hard" and "soft" in self.targets)
        return kind_ok and device_type in self.devices

    def wants_one_hot(self, targets: str) -> bool:
        return targets == "hard" and "hard" not in self.targets


REGISTRY: dict[str, Variant] = {}


def register(
    name: str,
    *,
    targets: set[str] | frozenset[str] = ALL_TARGETS,
    devices: set[str] | frozenset[str] = ALL_DEVICES,
    stable: bool = True,
    expected_wrong: str = "",
    description: str = "",
    setup: Callable[[LossFn], LossFn] | None = None,
    overwrites_input: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Decorator: add `fn` to the registry under `name` and return it unchanged."""

    def add(fn: LossFn) -> LossFn:
        if name in REGISTRY:
            raise ValueError(f"variant {name!r} is registered twice")
        REGISTRY[name] = Variant(
            name=name,
            fn=fn,
            targets=frozenset(targets),
            devices=frozenset(devices),
            stable=stable,
            expected_wrong=expected_wrong,
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
            setup=setup,
            overwrites_input=overwrites_input,
        )
        return fn

    return add


def names() -> list[str]:
    """Registered names in registration order (the fixed order reports use)."""
    return list(REGISTRY)


def _from_import_path(spec: str) -> Variant:
    """`[alias@]package.module:function` -> a user Variant named alias (default: the path)."""
    alias, _, path = spec.rpartition("@")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's setting, reported in one line
        raise SettingError(
            f"variants: {spec!r} does not import ({type(exc).__name__}: {exc}); "
            "use package.module:function on the Python path"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SettingError(f"variants: {spec!r}: module {module_name!r} has no function {attr!r}")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise SettingError(
            f"variants: {spec!r} must take two arguments (logits, targets) and return the mean loss"
        ) from None
    except ValueError:
        pass  # builtins without a signature: let the run find out
    targets = getattr(fn, "harness_targets", {"soft"})
    return Variant(
        name=alias or spec,
        fn=fn,
        targets=frozenset(targets),
        description=f"user variant {path}",
        overwrites_input=bool(getattr(fn, "harness_overwrites_input", False)),
        user=True,
    )


def get(name: str) -> Variant:
    """A registered variant, or a user one given as `[alias@]package.module:function`."""
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        return _from_import_path(name)
    raise SettingError(
        f"variants: unknown variant {name!r}; registered: {', '.join(names())} "
        "(or give package.module:function)"
    )


def resolve(requested: list[str] | tuple[str, ...], targets: str, device: str,
            exclude: list[str] | tuple[str, ...] = ()) -> list[Variant]:
    """The variants to run at a point: the requested ones, or every registered variant that
    supports the point when none is requested, less `exclude`. Raises SettingError for an
    unknown name, two variants under one name (their rows would collide) or nothing to run."""
    for name in exclude:
        if name not in REGISTRY:
            raise SettingError(f"exclude_variants: unknown variant {name!r}; registered: {', '.join(names())}")
    if requested:
        pairs = [(n, get(n)) for n in requested if n not in exclude]
        if not pairs:
            raise SettingError("variants: nothing left to run: every variant listed is also in exclude_variants")
    else:
        pairs = [(v.name, v) for v in REGISTRY.values() if v.runs_on(targets, device) and v.name not in exclude]
        if not pairs:
            raise SettingError(f"exclude_variants: leaves no variant to run at targets={targets} device={device}")
    chosen = [v for _, v in pairs]
    seen: dict[str, str] = {}
    for spec, variant in pairs:
        if variant.name in seen:
            raise SettingError(
                f"variants: two variants are named {variant.name!r} ({seen[variant.name]!r} and {spec!r}); "
                "list each once and give a user variant its own name with NAME@package.module:function")
        seen[variant.name] = spec
    return chosen


# Modules that register variants, in the order their variants appear in tables and figures.
_FAMILIES = (
    "harness.variants.native",
    "harness.variants.notebook",
    "harness.variants.compiled",
    "harness.variants.chunked",
    "harness.variants.online",
    "harness.variants.shifted",
    "harness.variants.triton_fused",  # CUDA only; imports triton on its first call
    "harness.variants.external",     # last: registers only what imports (e.g. Liger-Kernel)
)
for _module in _FAMILIES:
    importlib.import_module(_module)
