"""The run configuration: the typed schema for Hydra and the checks every family shares.

The schema (registered in Hydra's ConfigStore as `harness_schema`) makes Hydra reject a
misspelled key or a wrongly typed value before anything runs. The checks then say what types
cannot express (ranges, names, device availability) with a `SettingError` of one line naming
the key and what is allowed: the run settings here (`validate_timing`, `validate_threads`,
`validate_device`), the point settings in the family's point module
(harness/cross_entropy/point.py, harness/linear_cross_entropy/point.py) with the shared checks
of harness/loss/. The loss options' fields come from their declarations
(harness/loss/declared.py): an option is declared once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from harness.loss import declared

# Re-exported: the checks every family shares live in the torch-free loss core.
from harness.loss.settings import INT_LIMIT, SettingError, get_setting, is_int  # noqa: F401


@dataclass
class TimingConfig:
    enabled: bool = True  # false: accuracy-only run (no time columns)
    warmup: int = 2  # untimed calls before the first sample
    # At least this many timed samples, at any call length: compare judges a row from its
    # samples' 10th percentile and median, which need 5 a side (harness/compare.py); 7 leaves room for two
    # disturbed samples.
    min_reps: int = 7
    min_time_s: float = 0.05  # ... and at least this much measured time
    max_reps: int = 10_000  # cap, so a 1 us function does not run forever
    allow_parallel: bool = False  # time even when a launcher runs jobs side by side (corrupts timings)
    # Each call of a variant stops after this many seconds with a `timeout` row (null: no limit;
    # harness/measure/deadline.py says what can be interrupted). Generous: a torch.compile
    # variant's first call compiles inside it.
    call_timeout_s: Optional[float] = 300.0


@dataclass
class MemoryConfig:
    enabled: bool = True  # the first, untimed call of each (variant, mode) runs under the tracker


@dataclass
class ScanConfig:
    # Axes one job walks in-process: each value is a point of its own (its own rows, its own
    # logit_scale and seed columns), without a Hydra job per point. A list given here replaces
    # the single setting of the same name. `+sweep=overflow` walks 41 scales x 3 seeds per job.
    logit_scale: list[float] = field(default_factory=list)
    seed: list[int] = field(default_factory=list)


@dataclass
class RunConfig:
    """Every setting but the loss options (HarnessConfig adds those from their declarations)."""

    # The problem family (harness/job.py): cross_entropy (logits given) | linear_cross_entropy
    # (hidden states and a classifier weight given: the logits are the family's to form).
    family: str = "cross_entropy"
    batch_size: int = 64  # rows B of the logits; linear_cross_entropy: tokens N
    num_classes: int = 1000  # classes C; linear_cross_entropy: vocabulary V
    hidden_size: int = 256  # D of linear_cross_entropy's hidden [N, D] and weight [V, D] (only there)
    bias: bool = False  # linear_cross_entropy only: the layer adds a bias [V] to the logits
    # vocab_parallel_cross_entropy only: the ranks the classes are split over; the link (GB/s
    # each way) the modelled communication time is stated at (NVLink 4: 450); how long a rank
    # may keep the others waiting in a collective before the call fails
    tp: int = 1
    link_gbps: float = 450.0
    tp_timeout_s: float = 60.0
    dtype: str = "fp32"  # fp16 | bf16 | fp32 | fp64
    logit_scale: float = 1.0  # logits = logit_scale * N(0, 1)
    device: str = "cpu"  # cpu | cuda | cuda:N
    targets: str = "soft"  # soft (probabilities) | hard (class indices)
    variants: list[str] = field(default_factory=list)  # [] = every variant that supports the point
    exclude_variants: list[str] = field(default_factory=list)  # left out of the default set
    seed: int = 0
    scan: ScanConfig = field(default_factory=ScanConfig)
    # torch's intra-op threads for the job; None: auto, the cores not busy with other work when
    # the sweep starts (harness/measure/environment.py), so that no op waits at the thread
    # pool's barrier for a core another process holds
    num_threads: Optional[int] = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    study: Any = None  # set by +study=NAME (conf/study/NAME.yaml): a study instead of points


# The loss options and the logits' distribution (`logits`, `ignore_fraction`, `ignore_index`,
# `label_smoothing`, `z_loss`, `softcap`, `class_weights`, `reduction`): one field per
# declaration, with its type and default. A variant that does not declare an option that is on
# gives an `unsupported` row, never a silently different loss.
HarnessConfig = dataclasses.make_dataclass(
    "HarnessConfig",
    [(o.name, o.annotation, field(default=o.default)) for o in declared.OPTIONS],
    bases=(RunConfig,),
)


def schema_defaults() -> dict[str, Any]:
    """Each top-level setting's default (the nodes timing, memory and scan as their dataclasses)."""
    return {f.name: getattr(HarnessConfig(), f.name) for f in dataclasses.fields(HarnessConfig)}


def validate_device(device: Any) -> str:
    if not isinstance(device, str):
        raise SettingError(f"device={device!r} is not allowed: use cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        import torch  # here only: the schema and its checks load without a measuring stack

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


def call_timeout(timing: Any) -> float | None:
    """timing.call_timeout_s, None where the node predates it (a config built by hand)."""
    return timing.get("call_timeout_s") if hasattr(timing, "get") else getattr(timing, "call_timeout_s", None)


def validate_timing(timing: Any) -> None:
    """Check the `timing` node; SettingError with one line on the first bad value."""
    for key, minimum in (("warmup", 0), ("min_reps", 1), ("max_reps", 1)):
        v = get_setting(timing, key)
        if not is_int(v) or v < minimum:
            raise SettingError(f"timing.{key}={v!r} is not allowed: use an integer >= {minimum}")
    mt = get_setting(timing, "min_time_s")
    if isinstance(mt, bool) or not isinstance(mt, (int, float)) or not math.isfinite(mt) or mt < 0:
        raise SettingError(f"timing.min_time_s={mt!r} is not allowed: use a finite number >= 0")
    limit = call_timeout(timing)
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, (int, float))
        or not math.isfinite(limit)
        or limit <= 0
    ):
        raise SettingError(
            f"timing.call_timeout_s={limit!r} is not allowed: use a number > 0 (or null: no limit)"
        )
    if get_setting(timing, "max_reps") < get_setting(timing, "min_reps"):
        raise SettingError("timing.max_reps is below timing.min_reps: raise max_reps or lower min_reps")


def validate_threads(threads: Any) -> int | None:
    if threads is not None and (not is_int(threads) or threads < 1):
        raise SettingError(
            f"num_threads={threads!r} is not allowed: use an integer >= 1 (or null: torch's default)"
        )
    return threads
