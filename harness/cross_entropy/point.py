"""A cross-entropy point: the settings that determine one set of inputs, validated.

`point(cfg)` turns a composed config into a `Point` or raises `SettingError` with one line
naming the key and what is allowed. `scan_points(cfg)` is the job's list of points: the one
point, or one per (logit_scale, seed) of the `scan` lists, walked in-process by one job.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import INT_LIMIT, SettingError, get_setting, is_int, validate_device
from harness.dtypes import DTYPES
from harness.vocabulary import POINT_COLUMNS

TARGET_KINDS = ("soft", "hard")


@dataclass(frozen=True)
class Point:
    """One validated point of a sweep: everything that determines the inputs."""

    batch_size: int
    num_classes: int
    dtype: str
    logit_scale: float
    device: str
    targets: str
    seed: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def family(self) -> Any:
        """The family that measures this point (harness/family.py)."""
        from harness.cross_entropy import FAMILY  # the package imports this module: import late

        return FAMILY

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS)."""
        return {name: getattr(self, name) for name in POINT_COLUMNS}


def _scale(s: Any, key: str) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        raise SettingError(f"{key}={s!r} is not allowed: use a finite number >= 0")
    return float(s)


def _seed(seed: Any, key: str) -> int:
    if not is_int(seed) or not 0 <= seed < INT_LIMIT:
        raise SettingError(f"{key}={seed!r} is not allowed: use an integer >= 0 (below 2^62)")
    return seed


def point(cfg: Any) -> Point:
    """Check the point settings of a composed config (DictConfig, dataclass or dict)."""
    b = get_setting(cfg, "batch_size")
    if not is_int(b) or not 1 <= b < INT_LIMIT:
        raise SettingError(f"batch_size={b!r} is not allowed: use an integer >= 1 (below 2^62)")
    c = get_setting(cfg, "num_classes")
    if not is_int(c) or not 2 <= c < INT_LIMIT:
        raise SettingError(f"num_classes={c!r} is not allowed: use an integer >= 2 (below 2^62)")
    dtype = get_setting(cfg, "dtype")
    if dtype not in DTYPES:
        raise SettingError(f"dtype={dtype!r} is not allowed: use one of {', '.join(DTYPES)}")
    s = _scale(get_setting(cfg, "logit_scale"), "logit_scale")
    targets = get_setting(cfg, "targets")
    if targets not in TARGET_KINDS:
        raise SettingError(f"targets={targets!r} is not allowed: use soft or hard")
    seed = _seed(get_setting(cfg, "seed"), "seed")
    device = validate_device(get_setting(cfg, "device"))
    return Point(
        batch_size=b, num_classes=c, dtype=dtype, logit_scale=s, device=device, targets=targets, seed=seed
    )


def scan_points(cfg: Any) -> list[Point]:
    """The points of one job: `point(cfg)`, or one per (seed, logit_scale) of the `scan`
    lists, seeds outermost. A list given in `scan` replaces the single setting of that name."""
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
