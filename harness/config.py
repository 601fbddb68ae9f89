"""The run configuration: typed schema for Hydra, and validation into a `Point`.

The schema (registered in Hydra's ConfigStore as `harness_schema`) makes Hydra reject a
misspelled key or a wrongly typed value before anything runs. `validate` then checks what
types cannot express (ranges, names, device availability) and raises `SettingError` with
one line naming the key and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.dtypes import DTYPES


class SettingError(ValueError):
    """A bad setting: the message is one line, naming the key and what is allowed."""


@dataclass
class TimingConfig:
    enabled: bool = True       # false: accuracy-only run (no time columns)
    warmup: int = 2            # untimed calls before the first sample
    min_reps: int = 5          # at least this many timed samples ...
    min_time_s: float = 0.05   # ... and at least this much measured time
    max_reps: int = 10_000     # cap, so a 1 us function does not run forever
    allow_parallel: bool = False  # time even when a launcher runs jobs side by side (corrupts timings)


@dataclass
class MemoryConfig:
    enabled: bool = True       # the first, untimed call of each (variant, mode) runs under the tracker


@dataclass
class HarnessConfig:
    batch_size: int = 64
    num_classes: int = 1000
    dtype: str = "fp32"            # fp16 | bf16 | fp32 | fp64
    logit_scale: float = 1.0       # logits = logit_scale * N(0, 1)
    device: str = "cpu"            # cpu | cuda | cuda:N
    targets: str = "soft"          # soft (probabilities) | hard (class indices)
    variants: list[str] = field(default_factory=list)  # [] = every variant that supports the point
    exclude_variants: list[str] = field(default_factory=list)  # left out of the default set
    seed: int = 0
    timing: TimingConfig = field(default_factory=TimingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    study: Any = None              # set by +study=NAME (conf/study/NAME.yaml): a study instead of points


TARGET_KINDS = ("soft", "hard")

# Integer settings stay below 2^62: results columns are int64, and the seed's two streams are
# seeded with 2 * seed + 1, which must fit the generator's 64 bits.
INT_LIMIT = 2**62


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


def _get(cfg: Any, key: str) -> Any:
    return cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_device(device: Any) -> str:
    if not isinstance(device, str):
        raise SettingError(f"device={device!r} is not allowed: use cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise SettingError(
                f"device={device} needs CUDA, but this machine has none: "
                "use device=cpu (for a whole sweep, +sweep=cpu)"
            )
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise SettingError(
                f"device={device} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return device
    raise SettingError(f"device={device!r} is not allowed: use cpu, cuda or cuda:N")


def validate(cfg: Any) -> Point:
    """Check a composed config (DictConfig, dataclass or dict); return its Point.

    Raises SettingError with a one-line message on the first bad setting.
    """
    b = _get(cfg, "batch_size")
    if not _is_int(b) or not 1 <= b < INT_LIMIT:
        raise SettingError(f"batch_size={b!r} is not allowed: use an integer >= 1 (below 2^62)")
    c = _get(cfg, "num_classes")
    if not _is_int(c) or not 2 <= c < INT_LIMIT:
        raise SettingError(f"num_classes={c!r} is not allowed: use an integer >= 2 (below 2^62)")
    dtype = _get(cfg, "dtype")
    if dtype not in DTYPES:
        raise SettingError(f"dtype={dtype!r} is not allowed: use one of {', '.join(DTYPES)}")
    s = _get(cfg, "logit_scale")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        raise SettingError(f"logit_scale={s!r} is not allowed: use a finite number >= 0")
    targets = _get(cfg, "targets")
    if targets not in TARGET_KINDS:
        raise SettingError(f"targets={targets!r} is not allowed: use soft or hard")
    seed = _get(cfg, "seed")
    if not _is_int(seed) or not 0 <= seed < INT_LIMIT:
        raise SettingError(f"seed={seed!r} is not allowed: use an integer >= 0 (below 2^62)")
    device = validate_device(_get(cfg, "device"))
    timing = _get(cfg, "timing")
    for key, minimum in (("warmup", 0), ("min_reps", 1), ("max_reps", 1)):
        v = _get(timing, key)
        if not _is_int(v) or v < minimum:
            raise SettingError(f"timing.{key}={v!r} is not allowed: use an integer >= {minimum}")
    mt = _get(timing, "min_time_s")
    if isinstance(mt, bool) or not isinstance(mt, (int, float)) or not math.isfinite(mt) or mt < 0:
        raise SettingError(f"timing.min_time_s={mt!r} is not allowed: use a finite number >= 0")
    if _get(timing, "max_reps") < _get(timing, "min_reps"):
        raise SettingError("timing.max_reps is below timing.min_reps: raise max_reps or lower min_reps")
    return Point(
        batch_size=b,
        num_classes=c,
        dtype=dtype,
        logit_scale=float(s),
        device=device,
        targets=targets,
        seed=seed,
    )
