#!/usr/bin/env bash
# Compare two commits on this machine, as a pull request's CI does:
#
#   bash scripts/ci_compare.sh BASE_REV HEAD_REV OUT_DIR [harness overrides ...]
#
# Checks out both revisions (git worktrees), runs the sweep (SWEEP, default smoke, with at least
# 10 samples a row, and one intra-op thread so that a busy machine's other work does not stall
# every op at the thread pool's barrier; both set here as well, for a base revision older than
# the smoke sweep's own settings) of each REPEATS
# times (default 2), interleaved (base, head, base, head) so that a change in the
# machine's load falls on both sides, into OUT_DIR/base/K and OUT_DIR/head/K, then compares
# them with `scripts/compare.py --repeats` (best of K per row) and writes OUT_DIR/comparison.md
# (at most 40 lines: the PR comment or job summary). COMPARE_ARGS adds options to compare.py
# (for example "--gate accuracy,memory"). PYTHON is the interpreter (default .venv/bin/python
# of this checkout, which `make setup` builds). Exit code: compare.py's (0 no regression,
# 1 a gated regression, 2 nothing comparable).
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "ci_compare: usage: bash scripts/ci_compare.sh BASE_REV HEAD_REV OUT_DIR [overrides ...]" >&2
    exit 2
fi
base_rev=$1 head_rev=$2 out=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
repeats=${REPEATS:-2}
sweep=${SWEEP:-smoke}
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d)
cleanup() {
    git -C "$repo" worktree remove --force "$work/base" >/dev/null 2>&1 || true
    git -C "$repo" worktree remove --force "$work/head" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
for side in base head; do
    rev=$base_rev
    [ "$side" = head ] && rev=$head_rev
    git -C "$repo" worktree add --quiet --detach "$work/$side" "$rev"
done

# Each side's own code: its folder first on the path (before the installed checkout).
for k in $(seq 1 "$repeats"); do
    for side in base head; do
        echo "ci_compare: $side ($(git -C "$work/$side" rev-parse --short HEAD)), run $k of $repeats"
        (cd "$work/$side" && PYTHONPATH="$work/$side" OMP_NUM_THREADS=1 "$python" -m harness "+sweep=$sweep" \
            "hydra.sweep.dir=$out/$side/$k" timing.min_reps=10 "$@" >"$out/$side-$k.log" 2>&1) || {
            echo "ci_compare: the $side sweep failed; its log: $out/$side-$k.log" >&2
            tail -3 "$out/$side-$k.log" >&2
            exit 2
        }
    done
done

status=0
# shellcheck disable=SC2086  # COMPARE_ARGS is a list of options
"$python" "$repo/scripts/compare.py" "$out/base" "$out/head" --repeats \
    --markdown "$out/comparison.md" ${COMPARE_ARGS:-} || status=$?
exit "$status"
