"""scripts/gpu_reference_run.sh, dry-run on a CPU: every stage's commands, their arguments and
the files they leave, checked before a GPU session spends its minutes on them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from harness.app import CONF_DIR  # also registers the config schema

from ..conftest import REPO

STAGES = ["check", "sweep", "options", "floor", "gpu_options", "linear", "kernel", "footprint", "tp"]
# What each stage leaves in OUTDIR (besides stages.txt): its log, and the rows it gathers.
OUTPUTS = {
    "check": ["gpu_check.txt"],
    "sweep": ["sweep_gpu.log"],
    "options": ["sweep_options.log"],
    "floor": ["sweep_floor.log"],
    "gpu_options": ["sweep_gpu_options.log"],
    "linear": ["sweep_linear.log"],
    "kernel": ["pytest_kernel.txt"],
    "footprint": ["sweep_footprint.log"],
    "tp": ["sweep_tp.log"],
}
PER_CALL_LIMIT_S = 600  # the device tool's longest command


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-dry")
    proc = subprocess.run(
        ["bash", "scripts/gpu_reference_run.sh", str(out), *STAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DRY_RUN": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    commands = [
        shlex.split(line[len("run:") :]) for line in proc.stdout.splitlines() if line.startswith("run:")
    ]
    return out, proc.stdout, commands


def test_every_stage_runs_and_leaves_its_files(dry):
    out, _, commands = dry
    assert [line.split(":")[0] for line in (out / "stages.txt").read_text().splitlines()] == [
        f"stage {s}" for s in STAGES
    ]
    for stage, files in OUTPUTS.items():
        for name in files:
            assert (out / name).read_text().startswith("run: timeout "), (stage, name)
    assert len(commands) == len(STAGES)


def test_each_command_has_a_time_limit_within_one_device_call(dry):
    _, _, commands = dry
    for words in commands:
        assert words[0] == "timeout" and 0 < int(words[1]) <= PER_CALL_LIMIT_S, words


def test_each_harness_command_composes(dry):
    # Hydra composes each stage's sweep with its overrides (a misspelt key or sweep fails here);
    # device=cuda itself is checked only where CUDA is.
    _, _, commands = dry
    harness = [w for w in commands if w[2:5] == ["python3", "-m", "harness"]]
    assert len(harness) == 7
    for words in harness:
        # One value of each swept setting: Hydra composes a single job's config with --cfg.
        # Composed in this process (what `python -m harness ARGS --cfg job` prints, without a
        # torch import per command).
        args = [_first_value(a) for a in words[5:] if not a.startswith("hydra.sweep.dir=")]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=args)
        assert cfg.batch_size > 0, args


def _first_value(arg: str) -> str:
    key, _, value = arg.partition("=")
    if "," in value and not value.startswith("["):
        return f"{key}={value.split(',')[0]}"
    return arg


def test_the_kernel_stage_selects_tests_that_exist(dry):
    _, _, commands = dry
    (pytest_cmd,) = [w for w in commands if w[2:5] == ["python3", "-m", "pytest"]]
    files = [w for w in pytest_cmd if w.startswith("tests/")]
    assert all((REPO / f).is_file() for f in files)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and " tests collected" in proc.stdout.splitlines()[-1], proc.stdout[-500:]


def test_an_unknown_stage_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        ["bash", "scripts/gpu_reference_run.sh", str(tmp_path), "nonsense"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1"},
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
