"""A vocabulary-parallel point: the settings that determine one set of inputs and its sharding.

The problem is the first family's loss on logits [N, V] with class-index targets, the logits
split by columns over `tp` ranks as tensor parallelism leaves them: rank r holds the classes
shard(r) = [r c, min((r + 1) c, V)) with c = ceil(V / tp), torch.chunk's layout (and
DTensor's `Shard(1)`), so V need not divide by tp and the last shard may be narrower. The loss
options (`ignore_fraction`, `ignore_index`, `label_smoothing`, `z_loss`, `softcap`,
`class_weights` (positive), `reduction`) are declared once for every family
(harness/loss/declared.py) and mean here what they mean unsharded: label smoothing spreads eps
over all V classes, not over a shard's.

`tp` is a point setting (a key column: rows at tp 2 and 4 are different measurements);
`link_gbps` and `tp_timeout_s` are the family's settings of the run: the link a modelled
communication time is stated at, and how long a rank may keep the others waiting in a
collective before the point's call fails (a rank that dies is seen at once).
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from harness.loss import declared, settings
from harness.loss.point import LOGITS_FIELDS, OptionedPoint, class_index_settings
from harness.loss.settings import SettingError, optional

FAMILY_NAME = "vocab_parallel_cross_entropy"
# H100/H200 NVLink 4: 900 GB/s both ways, 450 GB/s each way per GPU (what a ring step sends at)
DEFAULT_LINK_GBPS = 450.0
DEFAULT_TIMEOUT_S = 60.0
READS = frozenset(
    {"tp", "link_gbps", "tp_timeout_s", "targets", *(o.name for o in declared.read_by(FAMILY_NAME))}
)


def shard_bounds(num_classes: int, tp: int) -> list[tuple[int, int]]:
    """[start, stop) of each rank's classes: torch.chunk's layout, ceil(V / tp) per rank."""
    width = math.ceil(num_classes / tp)
    return [(min(r * width, num_classes), min((r + 1) * width, num_classes)) for r in range(tp)]


class _Point(OptionedPoint):
    """One validated point: batch_size (N rows), num_classes (V), dtype, logit_scale, device,
    seed, one field per loss option this family reads, then tp (ranks), link_gbps and
    tp_timeout_s (not part of the inputs: the rows keep tp as a key and the link in a column)."""

    FAMILY_NAME = FAMILY_NAME

    @property
    def family(self) -> Any:
        """The family that measures this point (harness/family.py)."""
        from harness.vocab_parallel_cross_entropy import FAMILY  # the package imports this module

        return FAMILY

    @property
    def shards(self) -> list[tuple[int, int]]:
        return shard_bounds(self.num_classes, self.tp)

    def columns(self) -> dict[str, Any]:
        return {**super().columns(), "tp": self.tp}

    def label(self) -> str:
        """One line for progress and logs."""
        widths = sorted({b - a for a, b in self.shards})
        shard = "x".join(str(w) for w in widths)
        return (
            f"N={self.batch_size} V={self.num_classes} tp={self.tp} (shards {shard}) {self.dtype} "
            f"scale={self.logit_scale:g} {self.device} seed={self.seed}{self.options_label()}"
        )


Point = declared.point_class(
    "Point",
    FAMILY_NAME,
    _Point,
    [*LOGITS_FIELDS, ("seed", int)],
    after=[
        ("tp", int, field(default=1)),
        ("link_gbps", float, field(default=DEFAULT_LINK_GBPS, compare=False)),
        ("tp_timeout_s", float, field(default=DEFAULT_TIMEOUT_S, compare=False)),
        ("targets", str, field(default="hard")),
    ],
)


def _tp(cfg: Any, num_classes: int) -> int:
    tp = optional(cfg, "tp", 1)
    if not settings.is_int(tp) or tp < 1:
        raise SettingError(f"tp={tp!r} is not allowed: use an integer >= 1 (the number of ranks)")
    if tp > num_classes:
        raise SettingError(f"tp={tp} is not allowed with num_classes={num_classes}: use tp <= num_classes")
    empty = [r for r, (a, b) in enumerate(shard_bounds(num_classes, tp)) if a == b]
    if empty:
        width = math.ceil(num_classes / tp)
        raise SettingError(
            f"tp={tp} with num_classes={num_classes} leaves rank {empty[0]} no classes (torch.chunk's "
            f"layout gives {width} per rank): use a tp whose ceil(V / tp) shards cover every rank"
        )
    return tp


def _positive_number(cfg: Any, key: str, default: float) -> float:
    v = optional(cfg, key, default)
    if not settings.is_number(v) or v <= 0:
        raise SettingError(f"{key}={v!r} is not allowed: use a finite number > 0")
    return float(v)


def point(cfg: Any) -> Point:
    """Check the point settings of a composed config (DictConfig, dataclass or dict)."""
    common = class_index_settings(cfg, FAMILY_NAME)
    return Point(
        **common,
        tp=_tp(cfg, common["num_classes"]),
        link_gbps=_positive_number(cfg, "link_gbps", DEFAULT_LINK_GBPS),
        tp_timeout_s=_positive_number(cfg, "tp_timeout_s", DEFAULT_TIMEOUT_S),
    )
