#!/usr/bin/env bash
# The paper's Table 1 for one data set, from nothing to the report:
#   1. `zo-hpc train CONFIG`: Stage 1 (JT-VAE, MPNN) and Stage 2 with the config's seed;
#   2. Stage 2 again with the other seeds of $SEEDS, from the same Stage-1 models;
#   3. Stage 2 variants of $VARIANTS (the config's seed, other [zo] settings);
#   4. `zo-hpc eval` of every run (Stage 1 vs Stage 2 on the held-out split);
#   5. `zo-hpc report` over all runs: plots and one Markdown table (<out_dir>/report/).
# Every step resumes where a killed or time-limited job stopped: run it again.
#
#   scripts/table1.sh inputs/table1/zinc.toml
#   LAUNCH="mpirun -n 4" SEEDS="42 43 44" scripts/table1.sh inputs/table1/hof.toml
#   VARIANTS="q4:q=4 central:estimator=\"central\" paper_mu:mu=0.001 lambda01:lambda=0.1" \
#     scripts/table1.sh inputs/table1/hof.toml
#
# ZO_HPC (default target/release/zo-hpc) is the binary; LAUNCH prefixes every call
# (mpirun/srun); EVAL_LIMIT (default 1000) held-out molecules are evaluated;
# ZO_HPC_ARGS are appended to every `train` (e.g. "--time-limit 3h"). A variant is
# NAME:KEY=VALUE[,KEY=VALUE…] with keys of [zo]; its run is <out_dir>_NAME. Runs after
# the first are the config with `--set`s (kept in <run>/set.args; the binary saves
# <run>/config.effective.toml), never a rewritten copy of the TOML.
set -euo pipefail
cfg=${1:?usage: scripts/table1.sh CONFIG}
seeds=${SEEDS:-42 43 44}
variants=${VARIANTS:-}
bin=${ZO_HPC:-target/release/zo-hpc}
launch=${LAUNCH:-}
limit=${EVAL_LIMIT:-1000}
extra=${ZO_HPC_ARGS:-}

out=$(sed -n 's/^out_dir *= *"\(.*\)"/\1/p' "$cfg" | head -1)
seed0=$(sed -n 's/^seed *= *\([0-9]*\)/\1/p' "$cfg" | head -1)
cfg_dir=$(cd "$(dirname "$cfg")" && pwd)
[ -n "$out" ] && [ -n "$seed0" ] || { echo "table1: $cfg needs run.out_dir and run.seed" >&2; exit 2; }
# run.out_dir is relative to the config's folder, as every path in it.
case "$out" in /*) out_abs=$out ;; *) out_abs=$(realpath -m "$cfg_dir/$out") ;; esac

# --resume only once there is something to resume (it refuses an empty folder).
resume() { ls "$1"/*/checkpoint*.h5 >/dev/null 2>&1 && echo --resume || true; }

# The --set options of a Stage-2 run with seed $1 and the [zo] settings $2
# (KEY=VALUE,…), one per line: from the Stage-1 models and the split
# (data.split_seed) of the first run. Kept as <run>/set.args for its evaluation.
stage2_sets() {
    local seed=$1 kv s
    printf '%s\n' --set "run.seed=$seed" --set "data.split_seed=$seed0" \
        --set "data.dataset=\"$out_abs/dataset.h5\"" \
        --set "zo.init_jtvae=\"$out_abs/jtvae/checkpoint.h5\"" \
        --set "zo.init_mpnn=\"$out_abs/mpnn/checkpoint.h5\""
    IFS=, read -ra kv <<< "$2"
    for s in "${kv[@]}"; do
        [ -z "$s" ] || printf '%s\n' --set "zo.$s"
    done
}

# Stage 2 only (`--stage zo`; the config keeps every stage so that `eval` finds
# Stage 1 in init_*) in folder $1 with seed $2 and the [zo] settings $3.
stage2() {
    local dir=$1 seed=$2 settings=$3 sets
    mkdir -p "$dir"
    stage2_sets "$seed" "$settings" > "$dir/set.args"
    mapfile -t sets < "$dir/set.args"
    echo "[table1] Stage 2 in $dir (seed $seed${settings:+, $settings})"
    # shellcheck disable=SC2086
    $launch "$bin" train "$cfg" --out-dir "$dir" "${sets[@]}" --stage zo $(resume "$dir") $extra
}

echo "[table1] $cfg: Stage 1 and Stage 2 (seed $seed0) in $out_abs"
# shellcheck disable=SC2086
$launch "$bin" train "$cfg" $(resume "$out_abs") $extra
runs=("$out_abs")
for s in $seeds; do
    [ "$s" = "$seed0" ] && continue
    stage2 "${out_abs}_seed$s" "$s" ""
    runs+=("${out_abs}_seed$s")
done
for v in $variants; do
    stage2 "${out_abs}_${v%%:*}" "$seed0" "${v#*:}"
    runs+=("${out_abs}_${v%%:*}")
done
for r in "${runs[@]}"; do
    sets=()
    [ ! -f "$r/set.args" ] || mapfile -t sets < "$r/set.args"
    if [ ! -f "$r/eval.h5" ]; then
        echo "[table1] evaluating $r"
        $launch "$bin" eval "$cfg" --out-dir "$r" "${sets[@]}" --limit "$limit"
    fi
done
"$bin" report "${runs[@]}" --out "$out_abs/report"
