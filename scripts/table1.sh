#!/usr/bin/env bash
# The paper's Table 1 for one data set, from nothing to the report:
#   1. `zo-hpc train CONFIG`: Stage 1 (JT-VAE, MPNN) and Stage 2 with the config's seed;
#   2. Stage 2 again with the other seeds of $SEEDS, from the same Stage-1 models;
#   3. `zo-hpc eval` of every run (Stage 1 vs Stage 2 on the held-out split);
#   4. `zo-hpc report` over all runs: plots and one Markdown table (<out_dir>/report/).
# Every step resumes where a killed or time-limited job stopped: run it again.
#
#   scripts/table1.sh inputs/table1/zinc.toml
#   LAUNCH="mpirun -n 4" SEEDS="42 43 44" scripts/table1.sh inputs/table1/hof.toml
#
# ZO_HPC (default target/release/zo-hpc) is the binary; LAUNCH prefixes every call
# (mpirun/srun); EVAL_LIMIT (default 1000) held-out molecules are evaluated;
# ZO_HPC_ARGS are appended to every `train` (e.g. "--time-limit 3h").
set -euo pipefail
cfg=${1:?usage: scripts/table1.sh CONFIG}
seeds=${SEEDS:-42 43 44}
bin=${ZO_HPC:-target/release/zo-hpc}
launch=${LAUNCH:-}
limit=${EVAL_LIMIT:-1000}
extra=${ZO_HPC_ARGS:-}

out=$(sed -n 's/^out_dir *= *"\(.*\)"/\1/p' "$cfg" | head -1)
seed0=$(sed -n 's/^seed *= *\([0-9]*\)/\1/p' "$cfg" | head -1)
cfg_dir=$(cd "$(dirname "$cfg")" && pwd)
[ -n "$out" ] && [ -n "$seed0" ] || { echo "table1: $cfg needs run.out_dir and run.seed" >&2; exit 2; }
case "$out" in /*) out_abs=$out ;; *) out_abs=$PWD/$out ;; esac

echo "[table1] $cfg: Stage 1 and Stage 2 (seed $seed0) in $out"
# --resume only once there is something to resume (it refuses an empty folder).
resume() { ls "$1"/*/checkpoint*.h5 >/dev/null 2>&1 && echo --resume || true; }
# shellcheck disable=SC2086
$launch "$bin" train "$cfg" $(resume "$out") $extra
runs=("$out")
for s in $seeds; do
    [ "$s" = "$seed0" ] && continue
    dir="${out}_seed$s"
    mkdir -p "$dir"
    # Same config, this seed, Stage 2 only, starting from the Stage-1 models above.
    # Data paths become absolute: the derived config lives in the run folder.
    sed -e "s#^out_dir *=.*#out_dir = \"$dir\"#" \
        -e "s#^seed *=.*#seed = $s#" \
        -e "s#^stages *=.*#stages = [\"zo\"]#" \
        -e "s#\"\.\./#\"$cfg_dir/../#g" \
        -e "s#^\[zo\]#[zo]\ninit_jtvae = \"$out_abs/jtvae/checkpoint.h5\"\ninit_mpnn = \"$out_abs/mpnn/checkpoint.h5\"#" \
        -e "s#^\[data\]#[data]\ndataset = \"$out_abs/dataset.h5\"#" \
        "$cfg" > "$dir/config.toml"
    echo "[table1] Stage 2, seed $s, in $dir"
    # shellcheck disable=SC2086
    $launch "$bin" train "$dir/config.toml" $(resume "$dir") $extra
    runs+=("$dir")
done
for r in "${runs[@]}"; do
    c="$r/config.toml"
    [ -f "$c" ] || c="$cfg"
    if [ ! -f "$r/eval.h5" ]; then
        echo "[table1] evaluating $r"
        $launch "$bin" eval "$c" --limit "$limit" --out-dir "$r"
    fi
done
"$bin" report "${runs[@]}" --out "$out/report"
