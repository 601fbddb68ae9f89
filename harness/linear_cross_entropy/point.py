"""A linear + cross-entropy point: the settings that determine one set of inputs, validated.

The problem is loss = CE(hidden [N, D] @ weight [V, D]^T (+ bias [V]), targets [N]) with
class-index targets. Its settings reuse the first family's where they mean the same thing:
`batch_size` is the tokens N, `num_classes` the vocabulary V, `logit_scale` the logits' standard
deviation (harness/linear_cross_entropy/inputs.py), and the loss options (`ignore_fraction`,
`ignore_index`, `label_smoothing`, `z_loss`, `softcap`, `class_weights`, `reduction`) are the
first family's, checked by the same code (harness/cross_entropy/point.py) and with the same
formulas (harness/cross_entropy/options.py); `hidden_size` is D and `bias` adds a bias [V] to
the layer. The targets are always class indices (the `targets` setting is cross-entropy's and
is not read here; rows hold `hard`). `logits=zipf` is refused with one line: it is a
construction on given logits (ranks shuffled per row), and these logits are H W^T, a product
of rank D that the harness does not choose entry by entry.

A variant receives the options it declares as keyword arguments; their names here are the
first family's but for the class weights, `class_weight` (a variant's second positional
argument is already called `weight`), and the bias, `bias`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import INT_LIMIT, SettingError, get_setting, is_int, validate_device
from harness.cross_entropy.point import _optional, _options, _scale, _seed
from harness.dtypes import DTYPES
from harness.vocabulary import COLUMN_DEFAULTS, POINT_COLUMNS


@dataclass(frozen=True)
class Point:
    """One validated point: everything that determines the inputs."""

    batch_size: int  # N tokens
    hidden_size: int  # D
    num_classes: int  # V
    dtype: str
    logit_scale: float  # std of the logits (inputs.py: how the weight and bias share it)
    device: str
    seed: int
    ignore_fraction: float = 0.0
    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float = 0.0  # 0: no cap (the config's null)
    class_weights: str | tuple[float, ...] = "none"  # none | seeded | the given [V] weights
    reduction: str = "mean"
    bias: bool = False  # the layer adds a bias [V] to the logits
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
        """The keyword arguments a variant must honour here (variants/__init__.py names them);
        the plain loss without a bias needs none."""
        on = {
            "ignore_index": self.ignore_fraction > 0,
            "label_smoothing": self.label_smoothing > 0,
            "z_loss": self.z_loss > 0,
            "softcap": self.softcap > 0,
            "class_weight": self.class_weights != "none",
            "reduction": self.reduction != "mean",
            "bias": self.bias,
        }
        return frozenset(name for name, used in on.items() if used)

    def columns(self) -> dict[str, Any]:
        """The point's settings as the rows hold them (vocabulary.POINT_COLUMNS): `logits` at its
        default; weights given as a list recorded as "given" (the list is in _multirun.yaml)."""
        cols = {name: getattr(self, name, COLUMN_DEFAULTS.get(name)) for name in POINT_COLUMNS}
        if isinstance(self.class_weights, tuple):
            cols["class_weights"] = "given"
        return cols


def _positive(cfg: Any, key: str, low: int) -> int:
    v = get_setting(cfg, key)
    if not is_int(v) or not low <= v < INT_LIMIT:
        raise SettingError(f"{key}={v!r} is not allowed: use an integer >= {low} (below 2^62)")
    return v


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
    options = _options(cfg, v, "hard")  # the targets are class indices whatever `targets` says
    if options.pop("logits") != "normal":
        raise SettingError(
            "logits=zipf is not available with family=linear_cross_entropy: its logits are "
            "hidden @ weight^T, not drawn row by row; leave logits=normal"
        )
    bias = _optional(cfg, "bias", False)
    if not isinstance(bias, bool):
        raise SettingError(f"bias={bias!r} is not allowed: use true or false")
    return Point(
        batch_size=n,
        hidden_size=d,
        num_classes=v,
        dtype=dtype,
        logit_scale=s,
        device=device,
        seed=seed,
        bias=bias,
        **options,
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
