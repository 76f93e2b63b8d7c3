#!/usr/bin/env bash
# The data-scarcity study: the RMSE through the pipeline against the number of
# labeled training molecules, for Stage 1, Stage 2 with RDKit and Stage 2 with the
# physics-augmented knowledge source. Built on a Table-1 config (run
# scripts/table1.sh on it first: its Stage-1 JT-VAE and dataset are shared, and its
# runs are the RDKit runs with every label):
#   1. for each source of $SOURCES and each N of $SIZES: the Stage-1 MPNN on the first N
#      labeled molecules of the split (`data.n_labeled`), with as many optimizer steps
#      as the config's MPNN takes on all of them (epochs scaled by n_train / N, about
#      20 evaluations), then Stage 2 from it for each seed of $SEEDS;
#   2. `zo-hpc eval` of each Stage-2 run (Stage 1 and Stage 2 on the held-out split);
#   3. `zo-hpc report` over all of them: Table 1 per run and the scarcity plot.
# Every step resumes where a killed or time-limited job stopped: run it again.
#
#   scripts/scarcity.sh inputs/table1/hof.toml
#   SIZES="500 2000" SOURCES=physics SEEDS=42 scripts/scarcity.sh inputs/table1/hof.toml
#
# ZO_HPC, LAUNCH, EVAL_LIMIT (default 1000) and ZO_HPC_ARGS as in scripts/table1.sh.
# Runs go to <out_dir>_scarcity/<source>_n<N>[_seed<S>]; the physics results are
# cached in <out_dir>/physics_mopac.h5 (beside the dataset) for every run.
set -euo pipefail
cfg=${1:?usage: scripts/scarcity.sh CONFIG}
sizes=${SIZES:-500 1000 2000 5600}
sources=${SOURCES:-rdkit physics}
seeds=${SEEDS:-42 43 44}
bin=${ZO_HPC:-target/release/zo-hpc}
launch=${LAUNCH:-}
limit=${EVAL_LIMIT:-1000}
extra=${ZO_HPC_ARGS:-}

out=$(sed -n 's/^out_dir *= *"\(.*\)"/\1/p' "$cfg" | head -1)
seed0=$(sed -n 's/^seed *= *\([0-9]*\)/\1/p' "$cfg" | head -1)
n_train=$(sed -n 's/^n_train *= *\([0-9]*\)/\1/p' "$cfg" | head -1)
# The MPNN's epochs: [train.mpnn] epochs, else [train] epochs.
mpnn_epochs=$(awk '/^\[/{sec=$0} /^epochs *=/{v=$3; if(sec=="[train.mpnn]")m=v; if(sec=="[train]")t=v} END{print (m?m:t)}' "$cfg")
cfg_dir=$(cd "$(dirname "$cfg")" && pwd)
[ -n "$out" ] && [ -n "$seed0" ] && [ -n "$n_train" ] && [ -n "$mpnn_epochs" ] ||
    { echo "scarcity: $cfg needs run.out_dir, run.seed, data.n_train and the MPNN's epochs" >&2; exit 2; }
# run.out_dir is relative to the config's folder, as every path in it.
case "$out" in /*) out_abs=$out ;; *) out_abs=$(realpath -m "$cfg_dir/$out") ;; esac
study=${out_abs}_scarcity

# --resume only once the stage has a checkpoint (a single stage refuses nothing to resume).
resume() { ls "$1/$2"/checkpoint*.h5 >/dev/null 2>&1 && echo --resume || true; }

echo "[scarcity] Stage-1 JT-VAE and dataset of $out_abs"
# shellcheck disable=SC2086
$launch "$bin" train "$cfg" --stage jtvae $(resume "$out_abs" jtvae) $extra

# derive DIR SEED N SOURCE [INIT_MPNN]: writes DIR/set.args, the --set options of
# the run (one per line), read back for its training and evaluation.
derive() {
    local dir=$1 seed=$2 n=$3 src=$4 init_mpnn=${5:-}
    local epochs=$(( (mpnn_epochs * n_train + n - 1) / n ))
    local every=$(( (epochs + mpnn_epochs - 1) / mpnn_epochs ))
    mkdir -p "$dir"
    {
        printf '%s\n' --set "run.seed=$seed" --set "data.n_labeled=$n" \
            --set "data.split_seed=$seed0" --set "data.dataset=\"$out_abs/dataset.h5\"" \
            --set "zo.init_jtvae=\"$out_abs/jtvae/checkpoint.h5\"" \
            --set "train.mpnn.epochs=$epochs" --set "train.mpnn.eval_every=$every"
        [ -z "$init_mpnn" ] || printf '%s\n' --set "zo.init_mpnn=\"$init_mpnn\""
        [ "$src" = rdkit ] || printf '%s\n' --set "source.kind=\"$src\""
    } > "$dir/set.args"
}

# run DIR STAGE: trains STAGE of the config with DIR's --set options in DIR.
run() {
    local sets
    mapfile -t sets < "$1/set.args"
    # shellcheck disable=SC2086
    $launch "$bin" train "$cfg" --out-dir "$1" "${sets[@]}" --stage "$2" $(resume "$1" "$2") $extra
}

runs=()
for src in $sources; do
    for n in $sizes; do
        if [ "$src" = rdkit ] && [ "$n" = "$n_train" ]; then
            # Every label, RDKit: exactly the Table-1 runs.
            for s in $seeds; do
                if [ "$s" = "$seed0" ]; then runs+=("$out_abs"); else runs+=("${out_abs}_seed$s"); fi
            done
            continue
        fi
        first="$study/${src}_n$n"
        derive "$first" "$seed0" "$n" "$src"
        echo "[scarcity] $src, $n labeled: Stage-1 MPNN and Stage 2 (seed $seed0) in $first"
        run "$first" mpnn
        run "$first" zo
        runs+=("$first")
        for s in $seeds; do
            [ "$s" = "$seed0" ] && continue
            d="${first}_seed$s"
            derive "$d" "$s" "$n" "$src" "$first/mpnn/checkpoint.h5"
            echo "[scarcity] $src, $n labeled: Stage 2 (seed $s) in $d"
            run "$d" zo
            runs+=("$d")
        done
    done
done
for r in "${runs[@]}"; do
    sets=()
    [ ! -f "$r/set.args" ] || mapfile -t sets < "$r/set.args"
    if [ ! -f "$r/eval.h5" ] || [ "$r/eval.h5" -ot "$r/zo/checkpoint.h5" ]; then
        echo "[scarcity] evaluating $r"
        $launch "$bin" eval "$cfg" --out-dir "$r" "${sets[@]}" --limit "$limit"
    fi
done
"$bin" report "${runs[@]}" --out "$study/report"
