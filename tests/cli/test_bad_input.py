"""The bad-input catalogue: every bad setting stops before any work with exit code 2, one line
on stderr naming the setting, no traceback, and nothing written."""

from __future__ import annotations

import pytest

from ..conftest import run_cli, run_cli_in_process

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
    (
        ["seed=9223372036854775808"],
        "seed=9223372036854775808 is not allowed: use an integer >= 0 (below 2^62)",
    ),
    # loss options and the logits' distribution
    (["label_smoothing=-0.1"], "label_smoothing=-0.1 is not allowed: use [0, 1]"),
    (["targets=hard", "ignore_fraction=1"], "ignore_fraction=1.0 is not allowed: use [0, 1)"),
    (["targets=hard", "ignore_fraction=-0.5"], "ignore_fraction=-0.5 is not allowed: use [0, 1)"),
    (["targets=soft", "ignore_fraction=0.25"], "ignore_fraction=0.25 needs targets=hard"),
    (["softcap=0"], "softcap=0.0 is not allowed: use a finite number > 0, or null (no cap)"),
    (["softcap=-30"], "softcap=-30.0 is not allowed"),
    (["z_loss=-1e-4"], "z_loss=-0.0001 is not allowed: use a finite number >= 0"),
    (["num_classes=3", "class_weights=[1,2]"], "class_weights has 2 values for num_classes=3"),
    (["num_classes=3", "class_weights=[1,inf,2]"], "class_weights[1]=inf is not allowed"),
    (
        ["family=linear_cross_entropy", "hidden_size=8", "class_weights=signed"],
        "class_weights='signed' is not allowed: use none, seeded, or a list of 1000 finite numbers > 0",
    ),
    (
        ["class_weights=uniform"],
        "class_weights='uniform' is not allowed: use none, seeded, signed, or a list",
    ),
    (["reduction=avg"], "reduction='avg' is not allowed: use mean, sum, none"),
    (["logits=cauchy"], "logits='cauchy' is not allowed: use normal or zipf"),
    (["logit_offset=nan"], "logit_offset=nan is not allowed: use a finite number"),
    (["mask_fraction=1"], "mask_fraction=1.0 is not allowed: use [0, 1)"),
    (["targets=soft", "pad_vocab_to=64"], "pad_vocab_to=64 needs targets=hard"),
    (["targets=hard", "pad_vocab_to=64", "label_smoothing=0.1"], "pad_vocab_to=64 needs label_smoothing=0"),
    (["pad_vocab_to=-1"], "pad_vocab_to=-1 is not allowed: use an integer >= 0"),
    (["micro_batches=0"], "micro_batches=0 is not allowed: use an integer >= 1"),
    (["targets=soft", "micro_batches=2"], "micro_batches=2 needs targets=hard"),
    (["targets=hard", "micro_batches=2", "reduction=sum"], "micro_batches=2 needs reduction=mean"),
    (["targets=hard", "batch_size=4", "micro_batches=8"], "micro_batches=8 is more than batch_size=4"),
    (["targets=soft", "target_confidence=0.9"], "target_confidence=0.9 needs targets=hard"),
    (["targets=hard", "logits=zipf", "target_confidence=0.9"], "target_confidence needs logits=normal"),
    (["targets=soft", "mask_fraction=0.5"], "mask_fraction=0.5 needs targets=hard"),
    (
        ["targets=hard", "mask_fraction=0.5", "label_smoothing=0.1"],
        "mask_fraction=0.5 needs label_smoothing=0",
    ),
    (["targets=hard", "spatial_size=7", "batch_size=64"], "spatial_size=7 does not divide batch_size=64"),
    (["targets=hard", "spatial_size=8", "micro_batches=2"], "micro_batches=2 needs spatial_size=0"),
    (["targets=soft", "spatial_size=8"], "spatial_size=8 needs targets=hard"),
    (["spatial_size=-1"], "spatial_size=-1 is not allowed: use an integer >= 0"),
    (["ignore_index=5"], "ignore_index=5 is inside the classes 0..999: it needs ignore_fraction > 0"),
    (["ignore_index=4611686018427387904"], "ignore_index=4611686018427387904 is not allowed: use an integer"),
    (["timing.min_reps=0"], "timing.min_reps=0 is not allowed"),
    (["timing.max_reps=2", "timing.min_reps=5"], "timing.max_reps is below timing.min_reps"),
    # variants
    (["variants=[no_such_variant]"], "unknown variant 'no_such_variant'; registered: torch_cross_entropy"),
    (["exclude_variants=[no_such_variant]"], "exclude_variants: unknown variant 'no_such_variant'"),
    (["variants=[no_such_package.module:fn]"], "'no_such_package.module:fn' does not import"),
    (["variants=[tests.fault_variants:missing]"], "has no function 'missing'"),
    (["variants=[tests.fault_variants:one_argument]"], "must take two arguments (logits, targets)"),
    (
        ["variants=[torch_cross_entropy,torch_cross_entropy]"],
        "variants: two variants are named 'torch_cross_entropy'",
    ),
    (
        ["variants=[torch_cross_entropy,torch_cross_entropy@tests.fault_variants:correct]"],
        "variants: two variants are named 'torch_cross_entropy'",
    ),
    (
        ["variants=[torch_cross_entropy]", "exclude_variants=[torch_cross_entropy]"],
        "variants: nothing left to run",
    ),
    (["-m", "seed=0,1", "variants=[chunked,chunked]"], "variants: two variants are named 'chunked'"),
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
        "# @package _global_\n# python -m harness +sweep=typo\nbatch_sise: 3\n"
    )
    return tmp_path / "conf"


# Run as real processes too: one refusal of each kind (the harness's check, the schema's type,
# a sweep file, an output directory), so exit code and stderr are the process's own. The rest
# of the catalogue runs in-process, the same code from cli_errors.run down.
IN_A_PROCESS = {("dtype=fp8",), ("batch_size=abc",), ("+sweep=smok",), ("hydra.run.dir={tmp}/a_file/run",)}


@pytest.mark.parametrize("overrides,message", CATALOGUE, ids=[" ".join(o) for o, _ in CATALOGUE])
def test_bad_setting_is_one_line_and_writes_nothing(overrides, message, tmp_path, user_conf):
    (tmp_path / "a_file").write_text("not a directory")
    out = tmp_path / "out"
    args = sorted(
        (a.format(tmp=tmp_path, user_conf=user_conf) for a in overrides), key=lambda a: not a.startswith("--")
    )  # argparse wants flags before overrides
    before = set(tmp_path.rglob("*"))
    proc = (run_cli if tuple(overrides) in IN_A_PROCESS else run_cli_in_process)(
        *args,
        f"hydra.run.dir={out}" if not any("hydra.run.dir" in a for a in args) else "hydra.job.chdir=false",
        f"hydra.sweep.dir={out}",
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness: ") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere under tmp
    assert not out.exists()


def test_the_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 15
    assert IN_A_PROCESS <= {tuple(o) for o, _ in CATALOGUE}


# --- bad input outside the settings: each one line, exit 2, nothing written ---------------

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from ..conftest import REPO  # noqa: E402


def _script(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_load_of_a_missing_directory_raises():
    from harness.results import load

    with pytest.raises(FileNotFoundError, match="no results at /nonexistent"):
        load("/nonexistent")


def test_report_out_under_a_file_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "a_file").write_text("x")
    proc = _script("scripts/report.py", str(tmp_path / "run"), "--out", str(tmp_path / "a_file" / "report"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--out" in proc.stderr and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "run"]


def test_compare_markdown_into_a_missing_folder_is_one_line(tmp_path):
    proc = _script(
        "scripts/compare.py",
        "results/baseline",
        "results/baseline",
        "--markdown",
        str(tmp_path / "missing" / "x.md"),
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "--markdown" in proc.stderr, proc.stderr
    assert not (tmp_path / "missing").exists()


def test_long_variant_lists_keep_point_folders_short(tmp_path):
    """Four user variants by import path used to make the point folder name pass 255 bytes."""
    names = ",".join(f"alias_number_{i}_with_a_long_name@tests.fault_variants:correct" for i in range(4))
    proc = run_cli(
        "-m",
        f"variants=[{names}]",
        "batch_size=2,4",
        "num_classes=5",
        "timing.enabled=false",
        "memory.enabled=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 2 and all(len(p.name.encode()) <= 200 for p in folders)
    assert all((p / "rows.parquet").exists() for p in folders)


def test_ctrl_c_is_one_line_and_resumable(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "+sweep=smoke",
        "timing.min_time_s=0.05",
        f"hydra.sweep.dir={tmp_path}",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.rglob("rows.parquet"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1500:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("harness: interrupted after ") and "run the same command to resume" in last
    done = int(last.split("after ")[1].split(" of ")[0])
    assert done >= 2 and len(list(tmp_path.rglob("rows.parquet"))) == done
