"""The bad-input catalogue: every bad setting stops before any work with exit code 2, one line
on stderr naming the setting, no traceback, and nothing written."""

from __future__ import annotations

import pytest

from .conftest import run_cli

# (overrides, text the one line must contain). {tmp} is a fresh temporary directory.
CATALOGUE = [
    # ranges and names the harness checks
    (["dtype=fp8"], "dtype='fp8' is not allowed: use one of fp16, bf16, fp32, fp64"),
    (["device=tpu"], "device='tpu' is not allowed"),
    (["device=cuda"], "device=cuda needs CUDA"),
    (["device=cuda:3"], "device=cuda:3 needs CUDA"),
    (["batch_size=0"], "batch_size=0 is not allowed"),
    (["batch_size=-3"], "batch_size=-3 is not allowed"),
    (["num_classes=1"], "num_classes=1 is not allowed"),
    (["logit_scale=inf"], "logit_scale=inf is not allowed"),
    (["logit_scale=nan"], "logit_scale=nan is not allowed"),
    (["logit_scale=-1"], "logit_scale=-1.0 is not allowed"),
    (["targets=fuzzy"], "targets='fuzzy' is not allowed: use soft or hard"),
    (["seed=-1"], "seed=-1 is not allowed"),
    (["timing.min_reps=0"], "timing.min_reps=0 is not allowed"),
    (["timing.max_reps=2", "timing.min_reps=5"], "timing.max_reps is below timing.min_reps"),
    # variants
    (["variants=[no_such_variant]"], "unknown variant 'no_such_variant'; registered: torch_cross_entropy"),
    (["exclude_variants=[no_such_variant]"], "exclude_variants: unknown variant 'no_such_variant'"),
    (["variants=[no_such_package.module:fn]"], "'no_such_package.module:fn' does not import"),
    (["variants=[tests.fault_variants:missing]"], "has no function 'missing'"),
    (["variants=[tests.fault_variants:one_argument]"], "must take two arguments (logits, targets)"),
    # types and keys Hydra checks against the schema
    (["batch_size=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["num_classes=2.5"], "could not be converted to Integer"),
    (["timing.enabled=maybe"], "Value 'maybe' is not a valid bool"),
    (["batch_sise=3"], "Key 'batch_sise' not in "),
    # sweeps, launchers, output directories
    (["+sweep=smok"], "Could not find 'sweep/smok'; Available options in 'sweep': "),
    (["+sweep=typo", "--config-dir={user_conf}"], "Key 'batch_sise' not in "),
    (["-m", "hydra/launcher=joblib", "batch_size=8,16"], "hydra/launcher=joblib runs jobs side by side"),
    (["hydra.run.dir={tmp}/a_file/run"], "is not usable: "),
]


@pytest.fixture
def user_conf(tmp_path):
    """A user's own sweep file with a misspelt key, found through --config-dir."""
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "typo.yaml").write_text(
        "# @package _global_\n# python -m harness +sweep=typo\nbatch_sise: 3\n")
    return tmp_path / "conf"


@pytest.mark.parametrize("overrides,message", CATALOGUE, ids=[" ".join(o) for o, _ in CATALOGUE])
def test_bad_setting_is_one_line_and_writes_nothing(overrides, message, tmp_path, user_conf):
    (tmp_path / "a_file").write_text("not a directory")
    out = tmp_path / "out"
    args = sorted((a.format(tmp=tmp_path, user_conf=user_conf) for a in overrides),
                  key=lambda a: not a.startswith("--"))   # argparse wants flags before overrides
    before = set(tmp_path.rglob("*"))
    proc = run_cli(*args, f"hydra.run.dir={out}" if not any("hydra.run.dir" in a for a in args) else "hydra.job.chdir=false",
                   f"hydra.sweep.dir={out}")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness: ") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert set(tmp_path.rglob("*")) == before     # nothing written anywhere under tmp
    assert not out.exists()


def test_the_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 15
