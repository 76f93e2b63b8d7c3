#!/bin/bash
# zo-hpc on a workstation: N MPI ranks with OpenMPI's mpirun.
#   jobs/mpirun.sh                      # 2 ranks, inputs/demo.toml
#   NP=4 jobs/mpirun.sh inputs/hof.toml --resume
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${NP:-2}
CONFIG=${1:-inputs/demo.toml}
shift || true
ZO_HPC=${ZO_HPC:-target/release/zo-hpc}
extra=()
[[ $(id -u) == 0 ]] && extra+=(--allow-run-as-root)
exec mpirun --oversubscribe "${extra[@]}" -n "$NP" "$ZO_HPC" train "$CONFIG" "$@"
