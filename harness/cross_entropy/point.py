"""A cross-entropy point: the settings that determine one set of inputs, validated.

`point(cfg)` turns a composed config into a `Point` or raises `SettingError` with one line
naming the key and what is allowed. `scan_points(cfg)` is the job's list of points: the one
point, or one per (logit_scale, seed) of the `scan` lists, walked in-process by one job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.config import validate_device
from harness.dtypes import DTYPES
from harness.loss import declared, settings
from harness.loss.settings import SettingError, get_setting, optional, positive
from harness.vocabulary import COLUMN_DEFAULTS, POINT_COLUMNS

TARGET_KINDS = ("soft", "hard")
# The settings this family reads beyond the common ones (harness/loss/settings.py, COMMON): a
# run that sets any other away from its default is refused (hidden_size, bias: the linear
# family's layer; this family's logits are given).
READS = frozenset({"targets", *(o.name for o in declared.read_by("cross_entropy"))})


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
        arguments of harness/loss/declared.py); the plain loss needs none."""
        return declared.required(self._options(), "cross_entropy")

    def _options(self) -> dict[str, Any]:
        return {o.name: getattr(self, o.name) for o in declared.read_by("cross_entropy")}

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS; hidden_size,
        another family's, at its default 0); weights given as a list are recorded as "given"
        (the list itself is in the sweep's _multirun.yaml)."""
        cols = {name: getattr(self, name, COLUMN_DEFAULTS.get(name)) for name in POINT_COLUMNS}
        return {**cols, **declared.columns(self._options()), "family": "cross_entropy"}

    def label(self) -> str:
        """One line for progress and logs."""
        return (
            f"B={self.batch_size} C={self.num_classes} {self.dtype} scale={self.logit_scale:g} "
            f"{self.targets} {self.device} seed={self.seed}"
        )


def point(cfg: Any) -> Point:
    """Check the point settings of a composed config (DictConfig, dataclass or dict)."""
    b = positive(cfg, "batch_size", 1)
    c = positive(cfg, "num_classes", 2)
    dtype = get_setting(cfg, "dtype")
    if dtype not in DTYPES:
        raise SettingError(f"dtype={dtype!r} is not allowed: use one of {', '.join(DTYPES)}")
    s = settings.scale(get_setting(cfg, "logit_scale"), "logit_scale")
    targets = get_setting(cfg, "targets")
    if targets not in TARGET_KINDS:
        raise SettingError(f"targets={targets!r} is not allowed: use soft or hard")
    seed = settings.seed(get_setting(cfg, "seed"), "seed")
    device = validate_device(get_setting(cfg, "device"))
    options = declared.parse(lambda k, d: optional(cfg, k, d), "cross_entropy", c, targets)
    return Point(
        batch_size=b,
        num_classes=c,
        dtype=dtype,
        logit_scale=s,
        device=device,
        targets=targets,
        seed=seed,
        **options,
    )


def scan_points(cfg: Any) -> list[Point]:
    """The job's points (harness/loss/settings.py: the one point, or its scan)."""
    return settings.scan_points(cfg, point)
