"""Reading and checking the settings every family has, and the points of one job.

Torch-free: the schema (harness/config.py) and the rows' vocabulary (harness/vocabulary.py)
are built from the option declarations that use these checks, and `compare` imports the
vocabulary without loading a measuring stack.

Every check raises `SettingError` with one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping

# Integer settings stay below 2^62: results columns are int64, and the seed's two streams are
# seeded with 2 * seed + 1, which must fit the generator's 64 bits.
INT_LIMIT = 2**62


class SettingError(ValueError):
    """A bad setting: the message is one line, naming the key and what is allowed."""


def get_setting(cfg: Any, key: str) -> Any:
    return cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)


def optional(cfg: Any, key: str, default: Any) -> Any:
    """cfg's `key`, or `default` when the config has no such key (one written before it existed,
    or built by hand for the plain loss)."""
    try:
        return get_setting(cfg, key)
    except (KeyError, AttributeError):
        return default


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """A finite int or float (a bool is neither, though Python calls it an int)."""
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def scale(s: Any, key: str) -> float:
    if not is_number(s) or s < 0:
        raise SettingError(f"{key}={s!r} is not allowed: use a finite number >= 0")
    return float(s)


def seed(value: Any, key: str) -> int:
    if not is_int(value) or not 0 <= value < INT_LIMIT:
        raise SettingError(f"{key}={value!r} is not allowed: use an integer >= 0 (below 2^62)")
    return value


def positive(cfg: Any, key: str, low: int) -> int:
    """An integer setting >= low (a size: rows, classes, hidden units)."""
    v = get_setting(cfg, key)
    if not is_int(v) or not low <= v < INT_LIMIT:
        raise SettingError(f"{key}={v!r} is not allowed: use an integer >= {low} (below 2^62)")
    return v


def one_of(cfg: Any, key: str, allowed: Iterable[str]) -> str:
    """A setting that names one of `allowed` (a dtype, a target kind)."""
    v = get_setting(cfg, key)
    if v not in allowed:
        raise SettingError(f"{key}={v!r} is not allowed: use one of {', '.join(allowed)}")
    return v


def number(v: Any, key: str, low: float, high: float, high_open: bool) -> float:
    """A finite number in [low, high] (or [low, high))."""
    above = is_number(v) and (v >= high if high_open else v > high)
    if not is_number(v) or v < low or above:
        allowed = f"[{low:g}, {high:g})" if high_open else f"[{low:g}, {high:g}]"
        if high == math.inf:
            allowed = f"a finite number >= {low:g}"
        raise SettingError(f"{key}={v!r} is not allowed: use {allowed}")
    return float(v)


def scan_points(cfg: Any, point: Callable[[Any], Any]) -> list[Any]:
    """The points of one job: `point(cfg)`, or one per (seed, logit_scale) of the `scan`
    lists, seeds outermost. A list given in `scan` replaces the single setting of that name.
    Every family's points are frozen dataclasses with `logit_scale` and `seed` fields."""
    base = point(cfg)
    scan = get_setting(cfg, "scan")
    scales = [
        scale(s, f"scan.logit_scale[{i}]") for i, s in enumerate(get_setting(scan, "logit_scale") or [])
    ]
    seeds = [seed(s, f"scan.seed[{i}]") for i, s in enumerate(get_setting(scan, "seed") or [])]
    return [
        dataclasses.replace(base, logit_scale=s, seed=sd)
        for sd in (seeds or [base.seed])
        for s in (scales or [base.logit_scale])
    ]


# Settings every family reads (the sizes, the dtype, the draw, the run's own settings): a family
# declares only the ones beyond these (Family.reads).
COMMON = frozenset(
    {
        "family",
        "batch_size",
        "num_classes",
        "dtype",
        "logit_scale",
        "device",
        "seed",
        "scan",
        "variants",
        "exclude_variants",
        "num_threads",
        "timing",
        "memory",
        "study",
    }
)


def refuse_unread(
    cfg: Any,
    family: str,
    reads: Iterable[str],
    defaults: Mapping[str, Any],
    readers: Callable[[str], Iterable[str]] | None = None,
) -> None:
    """SettingError when `cfg` sets a point setting that `family` does not read to anything but
    its default: a run that asks for it would otherwise measure a loss without it and say
    nothing (`focal_gamma=2` on a family that has no focal loss gave `ok` rows of the plain
    one). `defaults` maps each schema setting to its default; `readers(key)`, where given, the
    families that do read a setting (named in the message; called only to write it)."""
    known = COMMON | set(reads)
    for key, default in defaults.items():
        if key in known:
            continue
        value = optional(cfg, key, default)
        if value != default:
            others = sorted(readers(key)) if readers else []
            where = f"family={' or family='.join(others)}" if others else "a family that reads it"
            raise SettingError(
                f"{key}={_shown(value)} is not read by family={family}: leave it at its default "
                f"{_shown(default)}, or use {where}"
            )


def _shown(v: Any) -> str:
    """A value as the command line writes it (true, null), not as Python does (True, None)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else repr(v)
