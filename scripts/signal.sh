#!/usr/bin/env bash
# Issue 19's paired experiment: Stage-2 arms × seeds × data sets, all from the
# shipped Stage-1 models ($MODELS/<dataset>, `zo.pretrained`), then the evaluation
# of every run and one report that pairs the arms by seed:
#   1. `zo-hpc prepare` of each data set once (<out>/<dataset>/dataset.h5, shared);
#   2. `zo-hpc train --stage zo` of each run in <out>/<dataset>/<arm>_s<seed>/ (its
#      config.toml: $CONFIGS/<dataset>.toml with run.seed, run.arm and the arm's
#      [zo] keys set);
#   3. `zo-hpc eval` of each run ($EVAL_LIMIT held-out molecules);
#   4. `zo-hpc report` over every evaluated run (<out>/report/): Stage 2 per arm and
#      the paired difference of each arm to its control ("off"; "off_frz" for the
#      "_frz" arms) with 95% t-intervals, and the forest plots.
# A run whose eval.h5 is there is complete and skipped; one that stopped is resumed
# (`--resume`): run the script again, in the same or a later session. A run that
# fails (e.g. a [zo] key this build does not know) is reported at the end and the
# others go on; a run stopped by `--time-limit` (status 75) stops the script with 75.
#
#   scripts/signal.sh                                   # all arms, 5 seeds, hof and zinc
#   ARMS="off paper es" SEEDS="42 43" DATASETS=hof scripts/signal.sh runs/signal_try
#   LAUNCH="mpirun -n 4" ZO_HPC_ARGS="--time-limit 3h" scripts/signal.sh
#   DRY_RUN=1 scripts/signal.sh     # print the commands (DRY_RUN=2: and each config)
#
# Knobs: OUT ($1, default runs/signal); SEEDS ("42 43 44 45 46"); ARMS (default:
# every arm below, each also with "_frz"); DATASETS ("hof zinc"); EPOCHS (Stage-2
# epochs, `train.zo.epochs`; default the config's, 1) or STEPS (`--max-steps`);
# EVAL_LIMIT (1000); LAUNCH (prefix of train/prepare/eval: mpirun, srun); ZO_HPC
# (default target/release/zo-hpc); ZO_HPC_ARGS (appended to every `train`); CONTROL
# (off); CONFIGS (inputs/table1) and MODELS (inputs/models) of the repository.
#
# Arms (keys of [zo]; µσ = 0.1 flips ~8% of HOF queries, see docs/results.md):
#   off       latent = "off"                     the re-fit alone: the control
#   paper     forward, q = 1, mu = 0.001         the paper's setting
#   fwd64     forward, q = 64, mu = 0.1
#   fwd16     forward, q = 16, mu = 0.1           the forward estimator at the others' budget
#   es        es, q = 16, mu = 0.1               antithetic orthogonal, rank-shaped
#   cv        cv, q = 16, mu = 0.1               learned control variate
#   score     score, q = 16, temperature = 1.0   stochastic decoder
#   adaptive  forward, q = 16, mu = 0.1, target_flip = 0.1
#   placebo   forward, q = 16, mu = 0.1, latent = "placebo"
# and ARM_frz: the same with freeze = ["mpnn_embed", "mpnn_head"] and lambda = 0.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-runs/signal}}
seeds=${SEEDS:-42 43 44 45 46}
base_arms="off paper fwd64 fwd16 es cv score adaptive placebo"
arms=${ARMS:-$(for a in $base_arms; do printf '%s %s_frz ' "$a" "$a"; done)}
datasets=${DATASETS:-hof zinc}
epochs=${EPOCHS:-}
steps=${STEPS:-}
limit=${EVAL_LIMIT:-1000}
launch=${LAUNCH:-}
bin=${ZO_HPC:-target/release/zo-hpc}
extra=${ZO_HPC_ARGS:-}
control=${CONTROL:-off}
configs=${CONFIGS:-$repo/inputs/table1}
models=${MODELS:-$repo/inputs/models}
dry=${DRY_RUN:-}
case "$out" in /*) out_abs=$out ;; *) out_abs=$PWD/$out ;; esac
die() { echo "signal: $*" >&2; exit 2; }

# The [zo] lines of arm $1, one per line; status 1 for an unknown arm.
arm_keys() {
    local base=${1%_frz}
    case $base in
        off) echo 'latent = "off"' ;;
        paper) printf '%s\n' 'estimator = "forward"' 'q = 1' 'mu = 0.001' ;;
        fwd64) printf '%s\n' 'estimator = "forward"' 'q = 64' 'mu = 0.1' ;;
        fwd16) printf '%s\n' 'estimator = "forward"' 'q = 16' 'mu = 0.1' ;;
        es) printf '%s\n' 'estimator = "es"' 'q = 16' 'mu = 0.1' ;;
        cv) printf '%s\n' 'estimator = "cv"' 'q = 16' 'mu = 0.1' ;;
        score) printf '%s\n' 'estimator = "score"' 'q = 16' 'temperature = 1.0' ;;
        adaptive) printf '%s\n' 'estimator = "forward"' 'q = 16' 'mu = 0.1' 'target_flip = 0.1' ;;
        placebo) printf '%s\n' 'estimator = "forward"' 'q = 16' 'mu = 0.1' 'latent = "placebo"' ;;
        *) return 1 ;;
    esac
    if [ "$base" != "$1" ]; then
        printf '%s\n' 'freeze = ["mpnn_embed", "mpnn_head"]' 'lambda = 0.0'
    fi
}

# set_key SECTION 'KEY = VALUE' < config > config: the key's line in [SECTION]
# replaced, or added at the end of that section (the section added when missing).
set_key() {
    awk -v sec="$1" -v kv="$2" '
        BEGIN { key = kv; sub(/[ \t]*=.*/, "", key); done = 0; insec = 0; held = "" }
        function put() { if (insec && !done) { print kv; done = 1 } }
        function flush() { printf "%s", held; held = "" }
        /^[ \t]*$/ { held = held $0 "\n"; next }
        /^[ \t]*\[/ { put(); flush(); h = $0; gsub(/[ \t]/, "", h); insec = (h == "[" sec "]"); print; next }
        insec && $0 ~ ("^[ \t]*" key "[ \t]*=") { flush(); if (!done) print kv; done = 1; next }
        { flush(); print }
        END { put(); flush(); if (!done) { print "[" sec "]"; print kv } }'
}

# The config of dataset $1, arm $2 (empty: the data set's base), seed $3, folder $4.
config() {
    local ds=$1 arm=$2 seed=$3 dir=$4 cfg="$configs/$1.toml" text line
    text=$(sed "s#\"\.\./#\"$configs/../#g" "$cfg")
    set_one() { text=$(set_key "$1" "$2" <<< "$text"); }
    set_one run "out_dir = \"$dir\""
    set_one run "seed = $seed"
    set_one data "dataset = \"$out_abs/$ds/dataset.h5\""
    # One split for every seed (the prepared file's): a stated choice, checked.
    set_one data "split_seed = 42"
    set_one zo "pretrained = \"$models/$ds\""
    if [ -n "$arm" ]; then
        set_one run "arm = \"$arm\""
        while IFS= read -r line; do set_one zo "$line"; done < <(arm_keys "$arm")
    fi
    [ -z "$epochs" ] || set_one train.zo "epochs = $epochs"
    printf '%s\n' "$text"
}

# Writes config $2 (text on stdin) unless dry; DRY_RUN=2 prints it.
write_config() {
    local text
    text=$(cat)
    if [ -n "$dry" ]; then
        echo "+ config $1"
        [ "$dry" != 2 ] || printf '%s\n' "$text" | sed 's/^/    /'
    else
        mkdir -p "$(dirname "$1")"
        printf '%s\n' "$text" > "$1"
    fi
}

# Runs (or, dry, prints) a command; returns its status.
cmd() {
    echo "+ $*"
    [ -n "$dry" ] && return 0
    "$@"
}

# --resume only once there is something to resume (it refuses an empty folder).
resume() { ls "$1"/zo/checkpoint*.h5 >/dev/null 2>&1 && echo --resume || true; }

for a in $arms; do arm_keys "$a" >/dev/null || die "unknown arm '$a' (known: $base_arms, each also with _frz)"; done
for d in $datasets; do
    [ -f "$configs/$d.toml" ] || die "no config $configs/$d.toml for data set '$d'"
    [ -f "$models/$d/jtvae.h5" ] && [ -f "$models/$d/mpnn.h5" ] || die "no shipped models in $models/$d"
done

failed=()
done_runs=()
for d in $datasets; do
    if [ ! -f "$out_abs/$d/dataset.h5" ]; then
        config "$d" "" 42 "$out_abs/$d" | write_config "$out_abs/$d/base.toml"
        # shellcheck disable=SC2086
        cmd $launch "$bin" prepare "$out_abs/$d/base.toml" || die "preparing $d failed"
    fi
    for s in $seeds; do
        for a in $arms; do
            dir="$out_abs/$d/${a}_s$s"
            if [ -f "$dir/eval.h5" ]; then
                done_runs+=("$dir")
                continue
            fi
            config "$d" "$a" "$s" "$dir" | write_config "$dir/config.toml"
            echo "[signal] $d, arm $a, seed $s: Stage 2 in $dir"
            rc=0
            # shellcheck disable=SC2086
            cmd $launch "$bin" train "$dir/config.toml" --stage zo $(resume "$dir") \
                ${steps:+--max-steps "$steps"} $extra || rc=$?
            [ "$rc" = 75 ] && { echo "[signal] stopped by the time limit: run me again" >&2; exit 75; }
            if [ "$rc" != 0 ]; then
                failed+=("$dir (train, status $rc)")
                continue
            fi
            # shellcheck disable=SC2086
            if cmd $launch "$bin" eval "$dir/config.toml" --limit "$limit"; then
                done_runs+=("$dir")
            else
                failed+=("$dir (eval)")
            fi
        done
    done
done

if [ "${#done_runs[@]}" -gt 0 ]; then
    cmd "$bin" report "${done_runs[@]}" --out "$out_abs/report" --control "$control"
fi
if [ "${#failed[@]}" -gt 0 ]; then
    printf '[signal] failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
