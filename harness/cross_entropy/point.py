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
from harness.vocabulary import COLUMN_DEFAULTS, POINT_COLUMNS

TARGET_KINDS = ("soft", "hard")
LOGITS = ("normal", "zipf")
CLASS_WEIGHTS = ("none", "seeded")
REDUCTIONS = ("mean", "sum", "none")


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
    # The logits' distribution and the loss options (vocabulary.OPTION_DEFAULTS): the defaults
    # are the plain mean cross-entropy on logit_scale * N(0, 1).
    logits: str = "normal"
    ignore_fraction: float = 0.0
    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float = 0.0  # 0: no cap (the config's null)
    class_weights: str | tuple[float, ...] = "none"  # none | seeded | the given [C] weights
    reduction: str = "mean"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def family(self) -> Any:
        """The family that measures this point (harness/family.py)."""
        from harness.cross_entropy import FAMILY  # the package imports this module: import late

        return FAMILY

    @property
    def required_options(self) -> frozenset[str]:
        """The loss options a variant must honour to be measured at this point (the keyword
        arguments of README, "Loss options"); the plain loss needs none."""
        on = {
            "ignore_index": self.ignore_fraction > 0,
            "label_smoothing": self.label_smoothing > 0,
            "z_loss": self.z_loss > 0,
            "softcap": self.softcap > 0,
            "weight": self.class_weights != "none",
            "reduction": self.reduction != "mean",
        }
        return frozenset(name for name, used in on.items() if used)

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS; hidden_size,
        another family's, at its default 0); weights given as a list are recorded as "given"
        (the list itself is in the sweep's _multirun.yaml)."""
        cols = {name: getattr(self, name, COLUMN_DEFAULTS.get(name)) for name in POINT_COLUMNS}
        if isinstance(self.class_weights, tuple):
            cols["class_weights"] = "given"
        return cols


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
    if _optional(cfg, "bias", False):
        # Refused rather than ignored: a run that asks for a bias would otherwise measure a
        # loss without one (hidden_size, which only sizes the other family's layer, is ignored).
        raise SettingError(
            "bias=true needs family=linear_cross_entropy: cross-entropy's logits are given, "
            "there is no layer to add a bias to"
        )
    return Point(
        batch_size=b,
        num_classes=c,
        dtype=dtype,
        logit_scale=s,
        device=device,
        targets=targets,
        seed=seed,
        **_options(cfg, c, targets),
    )


def _number(cfg: Any, key: str, low: float, high: float, high_open: bool, default: float) -> float:
    """A finite number in [low, high] (or [low, high)); `default` when the config has no such key
    (a config written for the plain loss)."""
    v = _optional(cfg, key, default)
    above = v >= high if high_open else v > high
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low or above:
        allowed = f"[{low:g}, {high:g})" if high_open else f"[{low:g}, {high:g}]"
        if high == math.inf:
            allowed = f"a finite number >= {low:g}"
        raise SettingError(f"{key}={v!r} is not allowed: use {allowed}")
    return float(v)


def _optional(cfg: Any, key: str, default: Any) -> Any:
    try:
        return get_setting(cfg, key)
    except (KeyError, AttributeError):
        return default


def _class_weights(w: Any, num_classes: int) -> str | tuple[float, ...]:
    """none | seeded | a list of num_classes finite positive numbers (kept as a tuple: a Point is
    hashable). The rows record a given list as "given"."""
    if isinstance(w, str) and w in CLASS_WEIGHTS:
        return w
    allowed = f"use none, seeded, or a list of {num_classes} finite numbers > 0"
    if isinstance(w, str) or not hasattr(w, "__len__"):
        raise SettingError(f"class_weights={w!r} is not allowed: {allowed}")
    values = list(w)
    if len(values) != num_classes:
        raise SettingError(f"class_weights has {len(values)} values for num_classes={num_classes}: {allowed}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SettingError(f"class_weights[{i}]={v!r} is not allowed: {allowed}")
    return tuple(float(v) for v in values)


def _options(cfg: Any, num_classes: int, targets: str) -> dict[str, Any]:
    """The loss options and the logits' distribution, checked (README, "Loss options")."""
    logits = _optional(cfg, "logits", "normal")
    if logits not in LOGITS:
        raise SettingError(f"logits={logits!r} is not allowed: use {' or '.join(LOGITS)}")
    ignore_fraction = _number(cfg, "ignore_fraction", 0, 1, True, 0.0)
    ignore_index = _optional(cfg, "ignore_index", -100)
    if not is_int(ignore_index) or 0 <= ignore_index < num_classes or abs(ignore_index) >= INT_LIMIT:
        raise SettingError(
            f"ignore_index={ignore_index!r} is not allowed: use an integer outside the classes "
            f"0..{num_classes - 1} (PyTorch's default is -100)"
        )
    if ignore_fraction > 0 and targets != "hard":
        raise SettingError(
            f"ignore_fraction={ignore_fraction:g} needs targets=hard: probability targets have no "
            "ignored class (F.cross_entropy takes ignore_index with class indices only)"
        )
    label_smoothing = _number(cfg, "label_smoothing", 0, 1, False, 0.0)
    z_loss = _number(cfg, "z_loss", 0, math.inf, False, 0.0)
    softcap = _optional(cfg, "softcap", None)
    if softcap is not None and (
        isinstance(softcap, bool)
        or not isinstance(softcap, (int, float))
        or not math.isfinite(softcap)
        or softcap <= 0
    ):
        raise SettingError(f"softcap={softcap!r} is not allowed: use a finite number > 0, or null (no cap)")
    weights = _class_weights(_optional(cfg, "class_weights", "none"), num_classes)
    reduction = _optional(cfg, "reduction", "mean")
    if reduction not in REDUCTIONS:
        raise SettingError(f"reduction={reduction!r} is not allowed: use {', '.join(REDUCTIONS)}")
    return {
        "logits": logits,
        "ignore_fraction": ignore_fraction,
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": float(softcap or 0.0),
        "class_weights": weights,
        "reduction": reduction,
    }


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
