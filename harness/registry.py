"""Variants and their registry: what the rest of the harness knows about an implementation.

A variant is one function plus what the runner, the theory, the reports and the tests need to
know about it, all declared where the function is defined, with one decorator:

    @register("my_loss", targets={"soft", "hard"}, breaks_by=("sum_overflow",))
    def my_loss(logits, targets): ...

Each problem family (harness/cross_entropy/) owns one `Registry`; its signature and its
failure mechanisms are the family's. Nothing outside a variant's own file names the variant:
the default set of a point, the theory's predictions, the failure-boundary figure, the
report's styles, the README's variant table and the property tests all read these fields.

A user variant given on the command line as `[alias@]package.module:function` declares the
same facts as attributes of its function: `fn.harness_targets`, `fn.harness_breaks_by`,
`fn.harness_overwrites_input`, `fn.harness_options`, `fn.harness_spatial` (README, "Adding a
variant").
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.config import SettingError

Fn = Callable[..., object]

ALL_TARGETS = frozenset({"soft", "hard"})
ALL_DEVICES = frozenset({"cpu", "cuda"})


@dataclass(frozen=True)
class Variant:
    name: str  # stable id; the `variant` column in results
    fn: Fn = field(repr=False)
    targets: frozenset[str] = ALL_TARGETS  # kinds `fn` takes natively (the family says how)
    devices: frozenset[str] = ALL_DEVICES  # device types it runs on
    breaks_by: tuple[str, ...] = ()  # failure mechanisms (the family's catalogue) by
    #                                            which the formula breaks at large logit scales
    expected_wrong: str = ""  # one line: why the formula itself is wrong ...
    closed_form: Fn | None = field(default=None, repr=False)  # ... and what it computes instead
    description: str = ""
    setup: Callable[[Fn], Fn] | None = field(default=None, repr=False)  # e.g. torch.compile
    overwrites_input: bool = False  # writes into its inputs by design: a fresh copy
    #                                            before every call, outside the timed interval
    options: frozenset[str] = frozenset()  # loss options it honours (the family's catalogue),
    #                                            received as keyword arguments
    plain_equivalent: str = ""  # the variant it is, call for call, when no loss option is on:
    #                                            left out of the default set at such points
    spatial: bool = False  # also takes logits (N, C, d) and targets (N, d), as F.cross_entropy
    #                                            does (a point's spatial_size)
    user: bool = False  # named by import path on the command line

    @property
    def stable(self) -> bool:
        """Whether the formula holds at every logit scale (no failure mechanism declared)."""
        return not self.breaks_by

    def runs_on(self, targets: str, device: str) -> bool:
        """Whether this variant can run at a point with these targets and device: a variant
        that takes only soft targets also runs on hard points (it receives one-hot rows)."""
        device_type = device.split(":")[0]
        kind_ok = targets in self.targets or (targets == "hard" and "soft" in self.targets)
        return kind_ok and device_type in self.devices

    def missing_options(self, required: frozenset[str] | set[str]) -> list[str]:
        """The options a point needs that this variant does not honour (sorted)."""
        return sorted(set(required) - self.options)

    def unsupported_at(self, point: Any) -> str:
        """Why this variant cannot be measured at `point` ("" when it can): its target kinds and
        devices, then the loss options the point requires that it does not honour (never
        silently ignored). Every family's `unsupported` hook (harness/family.py)."""
        if not self.runs_on(point.targets, point.device):
            return f"{self.name} runs on targets {sorted(self.targets)} and devices {sorted(self.devices)}"
        missing = self.missing_options(point.required_options)
        if missing:
            honours = ", ".join(sorted(self.options)) or "none"
            return f"{self.name} does not take {', '.join(missing)} (it honours: {honours})"
        d = getattr(point, "spatial_size", 0)
        if d and not self.spatial:
            return f"{self.name} takes logits [B, C] only (spatial_size={d} hands them over as (N, C, {d}))"
        return ""

    def wants_one_hot(self, targets: str) -> bool:
        return targets == "hard" and "hard" not in self.targets


class Registry(Mapping[str, Variant]):
    """One family's variants by name, in registration order (the fixed order of reports)."""

    def __init__(
        self,
        family: str,
        signature: str,
        mechanisms: Mapping[str, str],
        options: Mapping[str, str] | None = None,
        arity: int = 2,
    ) -> None:
        self.family = family
        self.arity = arity  # positional arguments a variant takes (a user variant is checked for it)
        self.signature = signature  # one line, for errors about user variants
        self.mechanisms = dict(mechanisms)  # name -> how it breaks (the family's theory)
        self.options = dict(options or {})  # keyword argument -> what it means (the family's)
        self._variants: dict[str, Variant] = {}

    def __getitem__(self, name: str) -> Variant:
        return self._variants[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._variants)

    def __len__(self) -> int:
        return len(self._variants)

    def names(self) -> list[str]:
        return list(self._variants)

    def add(self, variant: Variant) -> Variant:
        """Add a built Variant (register's work; tests use it for throwaway variants)."""
        if variant.name in self._variants:
            raise ValueError(f"variant {variant.name!r} is registered twice")
        self._check(variant)
        self._variants[variant.name] = variant
        return variant

    def remove(self, name: str) -> None:
        self._variants.pop(name, None)

    def _check(self, v: Variant) -> None:
        unknown = [m for m in v.breaks_by if m not in self.mechanisms]
        if unknown:
            raise ValueError(
                f"variant {v.name!r}: unknown failure mechanism {unknown[0]!r}; "
                f"{self.family} knows {', '.join(self.mechanisms)}"
            )
        unknown = sorted(v.options - set(self.options))
        if unknown:
            raise ValueError(
                f"variant {v.name!r}: unknown loss option {unknown[0]!r}; "
                f"{self.family} knows {', '.join(self.options) or 'none'}"
            )
        untaken = not_taken(v.fn, v.options)
        if untaken:
            raise ValueError(
                f"variant {v.name!r} declares the loss option {untaken[0]!r} but its function does not "
                "take it by keyword: add it to the signature, or take **options"
            )
        if bool(v.expected_wrong) != (v.closed_form is not None):
            raise ValueError(
                f"variant {v.name!r}: a variant wrong on purpose gives both expected_wrong "
                "(why) and closed_form (what it computes instead)"
            )

    def register(
        self,
        name: str,
        *,
        targets: set[str] | frozenset[str] = ALL_TARGETS,
        devices: set[str] | frozenset[str] = ALL_DEVICES,
        breaks_by: tuple[str, ...] = (),
        expected_wrong: str = "",
        closed_form: Fn | None = None,
        description: str = "",
        setup: Callable[[Fn], Fn] | None = None,
        overwrites_input: bool = False,
        options: set[str] | frozenset[str] = frozenset(),
        plain_equivalent: str = "",
        spatial: bool = False,
    ) -> Callable[[Fn], Fn]:
        """Decorator: add `fn` under `name` and return it unchanged."""

        def add(fn: Fn) -> Fn:
            self.add(
                Variant(
                    name=name,
                    fn=fn,
                    targets=frozenset(targets),
                    devices=frozenset(devices),
                    breaks_by=tuple(breaks_by),
                    expected_wrong=expected_wrong,
                    closed_form=closed_form,
                    description=description or (inspect.getdoc(fn) or "").split("\n")[0],
                    setup=setup,
                    overwrites_input=overwrites_input,
                    options=frozenset(options),
                    plain_equivalent=plain_equivalent,
                    spatial=spatial,
                )
            )
            return fn

        return add

    def get(self, name: str) -> Variant:
        """A registered variant, or a user one given as `[alias@]package.module:function`."""
        if name in self._variants:
            return self._variants[name]
        if ":" in name:
            return self._from_import_path(name)
        raise SettingError(
            f"variants: unknown variant {name!r}; registered: {', '.join(self.names())} "
            "(or give package.module:function)"
        )

    def _from_import_path(self, spec: str) -> Variant:
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
            inspect.signature(fn).bind(*[None] * self.arity)
        except TypeError:
            raise SettingError(f"variants: {spec!r} must take {self.signature}") from None
        except ValueError:
            pass  # builtins without a signature: let the run find out
        breaks_by = tuple(getattr(fn, "harness_breaks_by", ()))
        unknown = [m for m in breaks_by if m not in self.mechanisms]
        if unknown:
            raise SettingError(
                f"variants: {spec!r}: harness_breaks_by names {unknown[0]!r}; "
                f"known mechanisms: {', '.join(self.mechanisms)}"
            )
        options = frozenset(getattr(fn, "harness_options", ()))
        unknown = sorted(options - set(self.options))
        if unknown:
            raise SettingError(
                f"variants: {spec!r}: harness_options names {unknown[0]!r}; "
                f"known options: {', '.join(self.options)}"
            )
        untaken = not_taken(fn, options)
        if untaken:
            raise SettingError(
                f"variants: {spec!r}: harness_options names {untaken[0]!r}, which the function does not "
                "take by keyword; add it to the signature, or take **options"
            )
        return Variant(
            name=alias or spec,
            fn=fn,
            options=options,
            targets=frozenset(getattr(fn, "harness_targets", {"soft"})),
            breaks_by=breaks_by,
            description=f"user variant {path}",
            overwrites_input=bool(getattr(fn, "harness_overwrites_input", False)),
            spatial=bool(getattr(fn, "harness_spatial", False)),
            user=True,
        )

    def resolve(
        self,
        requested: list[str] | tuple[str, ...],
        targets: str,
        device: str,
        exclude: list[str] | tuple[str, ...] = (),
    ) -> list[Variant]:
        """The variants to run at a point: the requested ones, or every registered variant that
        supports the point when none is requested, less `exclude`. Raises SettingError for an
        unknown name, two variants under one name (their rows would collide) or nothing to run."""
        for name in exclude:
            if name not in self._variants:
                raise SettingError(
                    f"exclude_variants: unknown variant {name!r}; registered: {', '.join(self.names())}"
                )
        if requested:
            pairs = [(n, self.get(n)) for n in requested if n not in exclude]
            if not pairs:
                raise SettingError(
                    "variants: nothing left to run: every variant listed is also in exclude_variants"
                )
        else:
            pairs = [
                (v.name, v)
                for v in self._variants.values()
                if v.runs_on(targets, device) and v.name not in exclude
            ]
            if not pairs:
                raise SettingError(
                    f"exclude_variants: leaves no variant to run at targets={targets} device={device}"
                )
        seen: dict[str, str] = {}
        for spec, variant in pairs:
            if variant.name in seen:
                raise SettingError(
                    f"variants: two variants are named {variant.name!r} "
                    f"({seen[variant.name]!r} and {spec!r}); "
                    "list each once and give a user variant its own name with NAME@package.module:function"
                )
            seen[variant.name] = spec
        return [v for _, v in pairs]


def not_taken(fn: Fn, options: frozenset[str]) -> list[str]:
    """The declared options (keyword names) that `fn` cannot take by keyword, sorted: none where
    it takes **options, or has no signature to read. The runner passes every declared option at
    every point, so a name missing here would fail every call of the variant."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    by_keyword = {n for n, p in params.items() if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return sorted(set(options) - by_keyword)
