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
# NAME:KEY=VALUE[,KEY=VALUE…] with keys of [zo]; its run is <out_dir>_NAME.
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
case "$out" in /*) out_abs=$out ;; *) out_abs=$PWD/$out ;; esac

# --resume only once there is something to resume (it refuses an empty folder).
resume() { ls "$1"/*/checkpoint*.h5 >/dev/null 2>&1 && echo --resume || true; }

# Stage 2 only (`--stage zo`; the config keeps every stage so that `eval` finds
# Stage 1 in init_*) in folder $1 with seed $2 and the [zo] settings $3 (KEY=VALUE,…),
# from the Stage-1 models and the split (data.split_seed) of the first run; data
# paths made absolute (the derived config lives in the run folder).
stage2() {
    local dir=$1 seed=$2 sets=$3 kv
    mkdir -p "$dir"
    local args=(-e "s#^out_dir *=.*#out_dir = \"$dir\"#"
        -e "s#^seed *=.*#seed = $seed#"
        -e "s#\"\.\./#\"$cfg_dir/../#g"
        -e "s#^\[zo\]#[zo]\ninit_jtvae = \"$out_abs/jtvae/checkpoint.h5\"\ninit_mpnn = \"$out_abs/mpnn/checkpoint.h5\"#"
        -e "s#^\[data\]#[data]\nsplit_seed = $seed0\ndataset = \"$out_abs/dataset.h5\"#")
    IFS=, read -ra kv <<< "$sets"
    for s in "${kv[@]}"; do
        [ -z "$s" ] && continue
        local k=${s%%=*} v=${s#*=}
        grep -q "^$k *=" "$cfg" || { echo "table1: $cfg has no line '$k = …' to vary" >&2; exit 2; }
        args+=(-e "s#^$k *=.*#$k = $v#")
    done
    sed "${args[@]}" "$cfg" > "$dir/config.toml"
    echo "[table1] Stage 2 in $dir (seed $seed${sets:+, $sets})"
    # shellcheck disable=SC2086
    $launch "$bin" train "$dir/config.toml" --stage zo $(resume "$dir") $extra
}

echo "[table1] $cfg: Stage 1 and Stage 2 (seed $seed0) in $out"
# shellcheck disable=SC2086
$launch "$bin" train "$cfg" $(resume "$out") $extra
runs=("$out")
for s in $seeds; do
    [ "$s" = "$seed0" ] && continue
    stage2 "${out}_seed$s" "$s" ""
    runs+=("${out}_seed$s")
done
for v in $variants; do
    stage2 "${out}_${v%%:*}" "$seed0" "${v#*:}"
    runs+=("${out}_${v%%:*}")
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
