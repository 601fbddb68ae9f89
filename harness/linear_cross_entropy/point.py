"""A linear + cross-entropy point: the settings that determine one set of inputs, validated.

The problem is loss = CE(hidden [N, D] @ weight [V, D]^T, targets [N]) with class-index targets,
some rows ignored. Its settings reuse the first family's where they mean the same thing:
`batch_size` is the tokens N, `num_classes` the vocabulary V, `logit_scale` the logits' standard
deviation (harness/linear_cross_entropy/inputs.py), `ignore_fraction` / `ignore_index` the
ignored rows; `hidden_size` is D. The targets are always class indices (the `targets` setting
is cross-entropy's and is not read here; rows hold `hard`). The other loss options (label
smoothing, z-loss, softcap, class weights, reductions other than mean, zipf logits) are not
built for this family yet: a run that turns one on stops with one line rather than measuring
a different loss than it says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import INT_LIMIT, SettingError, get_setting, is_int, validate_device
from harness.cross_entropy.point import _number, _optional, _scale, _seed
from harness.dtypes import DTYPES
from harness.vocabulary import OPTION_DEFAULTS, POINT_COLUMNS


@dataclass(frozen=True)
class Point:
    """One validated point: everything that determines the inputs."""

    batch_size: int  # N tokens
    hidden_size: int  # D
    num_classes: int  # V
    dtype: str
    logit_scale: float  # std of the logits (weight ~ N(0, logit_scale^2 / D))
    device: str
    seed: int
    ignore_fraction: float = 0.0
    ignore_index: int = -100
    targets: str = "hard"  # always class indices: the column the first family's rows share

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def family(self) -> Any:
        """The family that measures this point (harness/family.py)."""
        from harness.linear_cross_entropy import FAMILY  # the package imports this module

        return FAMILY

    @property
    def required_options(self) -> frozenset[str]:
        """The keyword arguments a variant must honour here: ignore_index when rows are ignored."""
        return frozenset({"ignore_index"} if self.ignore_fraction > 0 else ())

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS): the loss
        options this family does not have at their defaults (the plain loss)."""
        return {name: getattr(self, name, OPTION_DEFAULTS.get(name)) for name in POINT_COLUMNS}


def _positive(cfg: Any, key: str, low: int) -> int:
    v = get_setting(cfg, key)
    if not is_int(v) or not low <= v < INT_LIMIT:
        raise SettingError(f"{key}={v!r} is not allowed: use an integer >= {low} (below 2^62)")
    return v


def _not_built(cfg: Any) -> None:
    """Loss options and logit distributions the family does not implement: one line, not a
    silently plainer loss."""
    for key, default in OPTION_DEFAULTS.items():
        if key in ("ignore_fraction", "ignore_index"):
            continue
        value = _optional(cfg, key, default)
        if key == "softcap" and value is None:
            continue
        if value != default:
            raise SettingError(
                f"{key}={value!r} is not available with family=linear_cross_entropy yet: "
                f"leave it at {default!r} (README, Fused linear + cross-entropy)"
            )


def point(cfg: Any) -> Point:
    """Check the point settings of a composed config (DictConfig, dataclass or dict)."""
    n = _positive(cfg, "batch_size", 1)
    d = _positive(cfg, "hidden_size", 1)
    v = _positive(cfg, "num_classes", 2)
    dtype = get_setting(cfg, "dtype")
    if dtype not in DTYPES:
        raise SettingError(f"dtype={dtype!r} is not allowed: use one of {', '.join(DTYPES)}")
    s = _scale(get_setting(cfg, "logit_scale"), "logit_scale")
    seed = _seed(get_setting(cfg, "seed"), "seed")
    device = validate_device(get_setting(cfg, "device"))
    _not_built(cfg)
    ignore_fraction = _number(cfg, "ignore_fraction", 0, 1, True, 0.0)
    ignore_index = _optional(cfg, "ignore_index", -100)
    if not is_int(ignore_index) or 0 <= ignore_index < v or abs(ignore_index) >= INT_LIMIT:
        raise SettingError(
            f"ignore_index={ignore_index!r} is not allowed: use an integer outside the classes "
            f"0..{v - 1} (PyTorch's default is -100)"
        )
    return Point(
        batch_size=n,
        hidden_size=d,
        num_classes=v,
        dtype=dtype,
        logit_scale=s,
        device=device,
        seed=seed,
        ignore_fraction=ignore_fraction,
        ignore_index=ignore_index,
    )


def scan_points(cfg: Any) -> list[Point]:
    """The points of one job: `point(cfg)`, or one per (seed, logit_scale) of the `scan` lists,
    seeds outermost (as harness/cross_entropy/point.py)."""
    base = point(cfg)
    scan = get_setting(cfg, "scan")
    scales = [
        _scale(s, f"scan.logit_scale[{i}]") for i, s in enumerate(get_setting(scan, "logit_scale") or [])
    ]
    seeds = [_seed(s, f"scan.seed[{i}]") for i, s in enumerate(get_setting(scan, "seed") or [])]
    return [
        dataclasses.replace(base, logit_scale=s, seed=seed)
        for seed in (seeds or [base.seed])
        for s in (scales or [base.logit_scale])
    ]
